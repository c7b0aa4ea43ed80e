"""A residual MLP denoiser for low-dimensional data (2-D toy sets such as the S-curve).

Same call signature as the UNet, so losses, samplers and the training loop treat both alike.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxdiff.errors import ConfigError
from jaxdiff.models.layers import (
  FOURIER_SCALE,
  TIME_EMBEDDINGS,
  TimeEmbedding,
  broadcast_timesteps,
  check_time_embedding,
  gap_time_input,
  resolve_labels,
  time_gap,
  with_self_condition,
  zeros_init,
)

Array = jax.Array


class MLPBlock(nn.Module):
  """Pre-LayerNorm residual block: ``h + W2 silu(W1 silu(LN(h)) + P silu(emb))``, dropout
  before ``W2`` (zero-initialised, so the block starts as the identity)."""

  features: int
  dropout: float = 0.0
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, h: Array, emb: Array, train: bool = False) -> Array:
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    r = nn.LayerNorm(name="norm", **kw)(h)
    r = nn.Dense(self.features, name="dense_1", **kw)(nn.silu(r))
    r = r + nn.Dense(self.features, name="emb_proj", **kw)(nn.silu(emb))
    r = nn.Dropout(self.dropout, deterministic=not train)(nn.silu(r))
    r = nn.Dense(self.features, name="dense_2", kernel_init=zeros_init, **kw)(r)
    return h + r


class MLP(nn.Module):
  """Denoiser for vectors: ``apply(variables, x, t, y=None, *, x_self_cond=None, train=False)``.

  ``x`` is ``[B, D]``; returns float32 ``[B, out]`` (``out = out_channels``, default ``D``,
  doubled when ``learn_sigma``). The time embedding is a fixed embedding + two-layer MLP
  (``layers.TimeEmbedding``), or a learned table over the ``num_timesteps`` integer timesteps;
  labels add a class embedding (label ``num_classes`` is the null class).

  ``t`` is float ``[B]`` in the process's time; ``time_input`` says which: ``"index"`` (the
  discrete chain's timestep, the default), ``"unit"`` (t in [0, 1]) or ``"log_sigma"`` (EDM's
  sigma, embedded through c_noise = ln(sigma) / 4). ``time_embedding``: ``"sinusoidal"``
  (default), ``"fourier"`` (fixed Gaussian random Fourier features, std ``fourier_scale``) or
  ``"learned"`` (``"index"`` only). See ``layers.time_features`` for the embedding math.
  ``second_time``: a two-time network (one-step models), called with ``r=``, the time the step
  lands on; ``t - r`` is embedded as well (``r=None``: ``r = t``).
  """

  hidden_dim: int = 128
  num_layers: int = 4
  time_embedding: str = "sinusoidal"  # layers.TIME_EMBEDDINGS
  num_timesteps: int = 1000  # size of the learned embedding table
  dropout: float = 0.0
  in_channels: int = -1  # > 0: checked against the input's last dimension
  out_channels: int = -1
  learn_sigma: bool = False
  num_classes: int = 0
  self_condition: bool = False
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  remat: bool = False
  time_input: str = "index"  # layers.TIME_INPUTS: "index" | "unit" | "log_sigma"
  fourier_scale: float = FOURIER_SCALE
  second_time: bool = False  # a two-time network: also embeds t - r (one-step models, `r=`)

  def __post_init__(self) -> None:
    check_time_embedding(self.time_input, self.time_embedding, TIME_EMBEDDINGS)
    super().__post_init__()

  @nn.compact
  def __call__(
    self,
    x: Array,
    t: Array,
    y: Array | None = None,
    *,
    x_self_cond: Array | None = None,
    r: Array | None = None,
    train: bool = False,
  ) -> Array:
    x = jnp.asarray(x)
    if x.ndim != 2:
      raise ConfigError(f"MLP expects vectors [B, D], got shape {x.shape}")
    if self.in_channels > 0 and x.shape[-1] != self.in_channels:
      raise ConfigError(f"model.data_dim={self.in_channels} but the input has shape {x.shape}")
    batch = x.shape[0]
    out = (self.out_channels if self.out_channels > 0 else x.shape[-1]) * (2 if self.learn_sigma else 1)
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)

    t = broadcast_timesteps(t, batch)
    if self.time_embedding == "learned":
      idx = jnp.clip(jnp.round(t), 0, self.num_timesteps - 1).astype(jnp.int32)
      emb = nn.Embed(self.num_timesteps, self.hidden_dim, name="time_embed", **kw)(idx)
    else:
      emb = TimeEmbedding(
        self.hidden_dim,
        self.hidden_dim,
        time_input=self.time_input,
        time_embedding=self.time_embedding,
        fourier_scale=self.fourier_scale,
        name="time_embed",
        **kw,
      )(t)
    gap = time_gap(t, r, batch, self.second_time)
    if gap is not None:  # a two-time network: the interval t - r, embedded like the time
      emb = emb + TimeEmbedding(
        self.hidden_dim,
        self.hidden_dim,
        time_input=gap_time_input("unit" if self.time_input == "index" else self.time_input),
        time_embedding="sinusoidal" if self.time_embedding == "learned" else self.time_embedding,
        fourier_scale=self.fourier_scale,
        name="second_time_embed",
        **kw,
      )(gap)
    labels = resolve_labels(y, batch, self.num_classes)
    if labels is not None:
      emb = emb + nn.Embed(self.num_classes + 1, self.hidden_dim, name="label_embed", **kw)(labels)

    h = with_self_condition(x, x_self_cond, self.self_condition).astype(self.dtype)
    h = nn.Dense(self.hidden_dim, name="dense_in", **kw)(h)
    block_cls = nn.remat(MLPBlock, static_argnums=(3,)) if self.remat else MLPBlock
    for i in range(self.num_layers):
      h = block_cls(self.hidden_dim, self.dropout, name=f"block_{i}", **kw)(h, emb, train)
    h = nn.silu(nn.LayerNorm(name="norm_out", **kw)(h))
    h = nn.Dense(out, name="dense_out", kernel_init=zeros_init, **kw)(h)
    return h.astype(jnp.float32)
