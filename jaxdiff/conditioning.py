"""What a model takes besides the noisy input and the time, known in one place.

`Conditioning.from_config(config)` reads the config once and answers, for the network the
config describes:

- `train_kwargs(batch, key)`: the model's keyword arguments during training, from a batch:
  labels `y` with classifier-free-guidance dropout to the null class, a `context` with its mask
  (dropout empties the mask: the model then reads its null context) and the conditioning image
  `x_cond` (never dropped);
- `sample_kwargs(num, labels, context=..., context_mask=..., x_cond=...)`: the `(cond, uncond)`
  pair for the samplers: the requested conditioning and its unconditional branch (null class,
  null context), which guidance uses;
- `dummy_kwargs(x)`: zero inputs of the right shapes for `model.init`;
- `validate(provides)` / `check_training_data(provides)`: the conditioning fields agree with each
  other and with what the data set's conditioning provides
  (`jaxdiff.data.derived_inputs.provided_inputs`).

It reads only the config (no data, no model code), so every layer can use it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp

from jaxdiff.errors import ConfigError, SamplingError

__all__ = ["Conditioning"]


@dataclasses.dataclass(frozen=True)
class Conditioning:
  """The conditioning inputs of a model (all zero / False: an unconditional model).

  num_classes: > 0: labels `y` in 0..num_classes-1, the label num_classes being the null class.
  self_condition: the model takes `x_self_cond` (the samplers and the loss feed it).
  context_dim: > 0: cross-attention to `context` ([B, L, context_dim] floats, or int tokens
    [B, L] when context_vocab > 0) with a boolean `context_mask` [B, L].
  cond_channels: > 0: a conditioning image `x_cond` [B, H, W, cond_channels].
  label_dropout / context_dropout: shares of labels / contexts dropped in training.
  image_model: the network takes images (the UNet), not vectors (the MLP).
  data_cond: config.data.cond, the data set's conditioning transform ("" none).
  """

  num_classes: int = 0
  self_condition: bool = False
  context_dim: int = 0
  context_vocab: int = 0
  cond_channels: int = 0
  label_dropout: float = 0.0
  context_dropout: float = 0.0
  image_model: bool = True
  data_cond: str = ""

  @classmethod
  def from_config(cls, config: Any) -> Conditioning:
    """From a complete config (`jaxdiff.configs.with_defaults` completes a partial one)."""
    m, t = config.model, config.train
    p_context = float(t.context_dropout)  # < 0: the label dropout
    return cls(
      num_classes=int(m.num_classes),
      self_condition=bool(m.self_condition),
      context_dim=int(m.context_dim),
      context_vocab=int(m.context_vocab),
      cond_channels=int(m.cond_channels),
      label_dropout=float(t.label_dropout),
      context_dropout=float(t.label_dropout) if p_context < 0 else p_context,
      image_model=m.name != "mlp",
      data_cond=str(config.data.cond or ""),
    )

  @property
  def labels(self) -> bool:
    return self.num_classes > 0

  @property
  def context(self) -> bool:
    return self.context_dim > 0

  @property
  def x_cond(self) -> bool:
    return self.cond_channels > 0

  # ------------------------------------------------------------------ validation

  def validate(self, provides: Mapping[str, int] | None = None) -> Conditioning:
    """ConfigError naming the field when the fields disagree with each other or with what the
    data's conditioning provides: {"context": vocabulary size of its int tokens, "x_cond":
    channels of its conditioning image} (`jaxdiff.data.derived_inputs.provided_inputs`)."""
    provides = provides or {}
    if (self.context or self.x_cond) and not self.image_model:
      raise ConfigError("config.model.context_dim / cond_channels need config.model.name='unet'.")
    if self.context_vocab and not self.context:
      raise ConfigError(
        f"config.model.context_vocab={self.context_vocab} needs config.model.context_dim > 0 (the token width)."
      )
    vocab = provides.get("context")
    if vocab is not None and (not self.context or self.context_vocab < vocab):
      raise ConfigError(
        f"config.data.cond={self.data_cond!r} yields int tokens 0..{vocab - 1}: set "
        f"config.model.context_dim > 0 and config.model.context_vocab >= {vocab}."
      )
    channels = provides.get("x_cond")
    if channels is not None and self.cond_channels != channels:
      raise ConfigError(
        f"config.data.cond={self.data_cond!r} yields x_cond with the data's {channels} channel(s): set "
        f"config.model.cond_channels={channels} (now {self.cond_channels})."
      )
    return self

  def check_training_data(self, provides: Mapping[str, int]) -> None:
    """The training data must carry what the network is conditioned on: a context needs
    config.data.cond='caption', a conditioning image config.data.cond='sr'."""
    if self.context and "context" not in provides:
      raise ConfigError(
        "config.model.context_dim > 0 but the training data carry no context: set "
        "config.data.cond='caption' (digits), or feed batches with a 'context' entry to "
        "jaxdiff.training.make_train_step yourself."
      )
    if self.x_cond and "x_cond" not in provides:
      raise ConfigError(
        "config.model.cond_channels > 0 but the training data carry no conditioning image: set "
        "config.data.cond='sr', or feed batches with an 'x_cond' entry to "
        "jaxdiff.training.make_train_step yourself."
      )

  # ------------------------------------------------------------------ model inputs

  def train_kwargs(self, batch: Mapping[str, Any], key: jax.Array) -> dict:
    """The model's keyword arguments for a training batch.

    Label and context dropout share one uniform draw per example (dropped when u < p), so with
    both the share of examples that lose both is min(p_label, p_context): the unconditional
    branch that guidance uses is trained too.
    """
    cond: dict = {}
    u = None
    if self.labels:
      if "label" not in batch:
        raise ConfigError(
          "config.model.num_classes > 0 but the data set yields no labels; set "
          "config.model.num_classes=0 for unconditional training."
        )
      y = batch["label"].astype(jnp.int32)
      if self.label_dropout > 0:
        u = jax.random.uniform(key, y.shape)  # = jax.random.bernoulli(key, p, y.shape) as u < p
        y = jnp.where(u < self.label_dropout, self.num_classes, y)
      cond["y"] = y
    if self.context:
      if "context" not in batch:
        raise ConfigError(
          "config.model.context_dim > 0 but the batches carry no 'context'; set "
          "config.data.cond='caption' (digits) or add a 'context' entry to the batches."
        )
      context = batch["context"]
      mask = batch.get("context_mask")
      mask = jnp.ones(context.shape[:2], bool) if mask is None else mask.astype(bool)
      if self.context_dropout > 0:
        if u is None:
          u = jax.random.uniform(key, context.shape[:1])
        mask = mask & ~(u < self.context_dropout)[:, None]
      cond["context"] = context
      cond["context_mask"] = mask
    if self.x_cond:
      if "x_cond" not in batch:
        raise ConfigError(
          "config.model.cond_channels > 0 but the batches carry no 'x_cond'; set "
          "config.data.cond='sr' or add an 'x_cond' entry to the batches."
        )
      cond["x_cond"] = batch["x_cond"].astype(jnp.float32)
    return cond

  def sample_kwargs(
    self,
    num: int,
    labels: Any = None,
    *,
    context: Any = None,
    context_mask: Any = None,
    x_cond: Any = None,
  ) -> tuple[dict, dict]:
    """(cond, uncond) for `num` samples: `labels` None asks the null class; `context` None the
    null context (mask None: every token counts); `x_cond` is shared by both branches. `uncond`
    holds what the unconditional branch changes (the null class, an all-False context mask); it
    is empty when nothing can be dropped."""
    cond: dict = {}
    uncond: dict = {}
    if self.labels:
      null = jnp.full((num,), self.num_classes, jnp.int32)
      if labels is None:
        cond["y"] = null
      else:
        cond["y"], uncond["y"] = jnp.asarray(labels, jnp.int32), null
    if self.context:
      if context is not None:
        context = jnp.asarray(context)
        mask = jnp.ones(context.shape[:2], bool) if context_mask is None else jnp.asarray(context_mask, bool)
        cond["context"], cond["context_mask"] = context, mask
        uncond["context_mask"] = jnp.zeros_like(mask)  # all False: the null context
    elif context is not None or context_mask is not None:
      raise SamplingError(
        "a context was given but the model has no cross-attention (config.model.context_dim = 0)"
      )
    if self.x_cond:
      if x_cond is None:
        raise SamplingError(
          f"the model is conditioned on an image (config.model.cond_channels={self.cond_channels}): "
          "pass x_cond [num, H, W, C]"
        )
      cond["x_cond"] = jnp.asarray(x_cond, jnp.float32)  # shared by both branches
    elif x_cond is not None:
      raise SamplingError(
        "x_cond was given but the model takes no conditioning image (config.model.cond_channels = 0)"
      )
    return cond, uncond

  def dummy_kwargs(self, x: jax.Array) -> dict:
    """Zero keyword inputs for `model.init(rng, x, t, **kwargs)` with a batch like `x`: `y`,
    `x_self_cond`, a one-token `context` (int for context_vocab > 0) and `x_cond`, as the model
    takes them."""
    batch = x.shape[0]
    kwargs: dict = {}
    if self.labels:
      kwargs["y"] = jnp.zeros((batch,), jnp.int32)
    if self.self_condition:
      kwargs["x_self_cond"] = jnp.zeros(x.shape, jnp.float32)
    if self.context and self.image_model:
      if self.context_vocab > 0:
        kwargs["context"] = jnp.zeros((batch, 1), jnp.int32)
      else:
        kwargs["context"] = jnp.zeros((batch, 1, self.context_dim), jnp.float32)
    if self.x_cond and self.image_model:
      kwargs["x_cond"] = jnp.zeros(x.shape[:-1] + (self.cond_channels,), jnp.float32)
    return kwargs

  def grid_labels(self, n: int) -> jax.Array | None:
    """Labels for a grid of about n samples, one row per class (None for an unconditional model)."""
    if not self.labels:
      return None
    return jnp.repeat(jnp.arange(self.num_classes), max(1, n // self.num_classes))
