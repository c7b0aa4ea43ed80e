"""Flax linen denoising networks and the one factory that builds them from a config.

``create_model(config)`` reads ``config.model`` (``name``: a key of ``MODELS``), so the
training loop, ``sample.py`` and users all build the same network from the same config;
``dummy_inputs(config)`` gives the arguments to ``init`` it with.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxdiff.conditioning import Conditioning
from jaxdiff.configs import with_defaults
from jaxdiff.errors import ConfigError
from jaxdiff.models.attention import CONTEXT_NULLS
from jaxdiff.models.autoencoder import AutoencoderKL
from jaxdiff.models.dit import DIT_VARIANTS, DiT, dit_variant, size_problem
from jaxdiff.models.layers import (
  FIXED_TIME_EMBEDDINGS,
  TIME_EMBEDDINGS,
  TIME_INPUTS,
  check_time_embedding,
  timestep_embedding,
)
from jaxdiff.models.mlp import MLP
from jaxdiff.models.unet import UNet

__all__ = [
  "AutoencoderKL",
  "UNet",
  "MLP",
  "DiT",
  "DIT_VARIANTS",
  "MODELS",
  "MODEL_NAMES",
  "ATTENTION_IMPLS",
  "create_model",
  "check_model_config",
  "dummy_inputs",
  "count_params",
  "timestep_embedding",
  "TIME_INPUT_BY_PROCESS",
  "time_input",
]

# config.model.time_input="auto": how each process's time enters the network (docs/noise_core.md)
TIME_INPUT_BY_PROCESS = {"vp": "index", "vpsde": "unit", "cosine": "unit", "flow": "unit", "edm": "log_sigma"}

MODELS: dict[str, type[nn.Module]] = {"unet": UNet, "mlp": MLP, "dit": DiT}  # config.model.name -> network
MODEL_NAMES = tuple(MODELS)
ATTENTION_IMPLS = ("auto", "xla", "cudnn")

# config.model fields that are integers (with their minimum) / tuples of positive integers / choices
_INTS = {
  "base_channels": 1,
  "num_res_blocks": 0,
  "num_groups": 1,
  "num_classes": 0,
  "context_dim": 0,
  "context_vocab": 0,
  "context_null_length": 1,
  "transformer_ff_mult": 1,
  "cond_channels": 0,
  "hidden_dim": 1,
  "num_layers": 0,
}
_INT_TUPLES = ("channel_mult", "attention_resolutions", "linear_attention_resolutions", "attention_levels")
_CHOICES = {"attention_impl": ATTENTION_IMPLS, "context_null": CONTEXT_NULLS, "downsample_padding": (0, 1)}
_NOT_FROM_CONFIG = ("name", "parent")  # flax Module fields that are not hyperparameters


def _complete(config: Any) -> Any:
  """The full config (package defaults under what is given); a model section alone is accepted."""
  return with_defaults(config if "model" in config else {"model": config})


def _fields(cls: type[nn.Module]) -> list[str]:
  return [f.name for f in dataclasses.fields(cls) if f.name not in _NOT_FROM_CONFIG]


def check_model_config(config: Any) -> None:
  """ConfigError (a ValueError) naming the first config.model field the network cannot take;
  only the fields of the named network are checked. `config` must be complete."""
  m = config.model
  if m.name == "autoencoder_kl":  # built from config.autoencoder (jaxdiff.training.autoencoder_step)
    return
  if m.name not in MODELS:
    raise ConfigError(f"config.model.name must be one of {MODEL_NAMES}, got {m.name!r}")
  fields = _fields(MODELS[m.name])
  for field in ("dtype", "param_dtype"):
    try:
      jnp.dtype(m[field])
    except TypeError:
      raise ConfigError(
        f"config.model.{field}={m[field]!r} is not a dtype name (e.g. 'float32', 'bfloat16')"
      ) from None
  if not 0.0 <= m.dropout < 1.0:
    raise ConfigError(f"config.model.dropout must be in [0, 1), got {m.dropout}")
  for field in fields:
    value = m.get(field)
    if field in _INTS and (isinstance(value, bool) or not isinstance(value, int) or value < _INTS[field]):
      raise ConfigError(f"config.model.{field} must be an integer >= {_INTS[field]}, got {value!r}")
    if field in _INT_TUPLES:
      try:
        ok = all(int(v) >= (0 if field == "attention_levels" else 1) for v in value)
      except (TypeError, ValueError):
        ok = False
      if not ok or (field == "channel_mult" and not value):
        raise ConfigError(
          f"config.model.{field} must be a sequence of {'non-negative' if field == 'attention_levels' else 'positive'} "
          "integers "
          f"{'(at least one level)' if field == 'channel_mult' else ''}, got {value!r}"
        )
    if field in _CHOICES and value not in _CHOICES[field]:
      raise ConfigError(f"config.model.{field} must be one of {_CHOICES[field]}, got {value!r}")
  _check_time_input(config)
  if m.name == "dit":
    _check_dit(config)
  Conditioning.from_config(config).validate()


_DIT_SIZE_FIELDS = ("patch_size", "hidden_size", "depth", "num_heads")  # what model.dit_variant sets


def _dit_sizes(m: Any) -> dict[str, int]:
  """patch_size, hidden_size, depth, num_heads: from model.dit_variant when it names one (a field
  left at its default takes the variant's value; one set to another value is a conflict), else
  the fields themselves."""
  if not m.dit_variant:
    return {f: m[f] for f in _DIT_SIZE_FIELDS}
  sizes = dit_variant(m.dit_variant, "config.model.")
  defaults = with_defaults({}).model
  for field, value in sizes.items():
    if m[field] not in (value, defaults[field]):
      raise ConfigError(
        f"config.model.{field}={m[field]!r} conflicts with config.model.dit_variant={m.dit_variant!r} "
        f"({field}={value}); drop one of them (dit_variant='' uses the fields)"
      )
  return sizes


def _check_dit(config: Any) -> None:
  m = config.model
  sizes = _dit_sizes(m)
  problem = size_problem(**sizes, mlp_ratio=m.mlp_ratio)
  if problem:
    raise ConfigError(problem.replace("{where}", "config.model."))
  p = sizes["patch_size"]
  if config.data.image_size % p:
    via = f" (from config.model.dit_variant={m.dit_variant!r})" if m.dit_variant else ""
    raise ConfigError(
      f"config.model.patch_size={p}{via} does not divide config.data.image_size={config.data.image_size}; "
      "pick a patch size that divides the image size"
    )


def time_input(config: Any) -> str:
  """config.model.time_input, with "auto" resolved by config.diffusion.process."""
  m = config.model
  if m.time_input != "auto":
    return m.time_input
  return TIME_INPUT_BY_PROCESS.get(config.diffusion.process, "index")


def _check_time_input(config: Any) -> None:
  m = config.model
  choice = time_input(config)
  try:
    check_time_embedding(
      choice, m.time_embedding, FIXED_TIME_EMBEDDINGS if m.name in ("unet", "dit") else TIME_EMBEDDINGS
    )
  except ValueError as e:
    raise ConfigError(str(e)) from None
  process = config.diffusion.process
  if process != "vp" and process in TIME_INPUT_BY_PROCESS and choice == "index":
    raise ConfigError(
      f"config.model.time_input='index' feeds raw times to the embedding, but diffusion.process={process!r} "
      f"has continuous time; use 'auto' (here {TIME_INPUT_BY_PROCESS.get(process)!r})."
    )


def create_model(config: Any) -> nn.Module:
  """The network ``config.model.name`` names, built from its ``config.model`` fields (an
  ml_collections config, the ``model`` section alone, or a mapping; missing fields take the
  package defaults, ``jaxdiff/configs/default.py``). ``config.data.channels`` fills in
  ``model.in_channels = -1``; the MLP takes ``model.data_dim`` features and
  ``config.diffusion.num_timesteps``. Invalid values raise a ConfigError (a ValueError) naming
  the field.
  """
  config = _complete(config)
  check_model_config(config)
  m = config.model
  cls = MODELS[m.name]
  kwargs = {f: tuple(m[f]) if f in _INT_TUPLES else m[f] for f in _fields(cls) if f in m}
  kwargs.update(dtype=jnp.dtype(m.dtype), param_dtype=jnp.dtype(m.param_dtype))
  if "time_input" in kwargs:
    kwargs["time_input"] = time_input(config)
  if cls is DiT:
    kwargs.update(_dit_sizes(m), mlp_ratio=float(m.mlp_ratio))
  if cls is MLP:
    kwargs.update(in_channels=m.data_dim, num_timesteps=config.diffusion.num_timesteps)
  elif m.in_channels <= 0:
    kwargs["in_channels"] = config.data.channels
  return cls(**kwargs)


def dummy_inputs(config: Any, batch_size: int = 1) -> tuple[jax.Array, jax.Array, dict]:
  """Zero inputs ``(x, t, kwargs)`` of the right shapes to ``init`` the model of ``config``:
  ``model.init(rng, x, t, **kwargs)``. Images are ``data.image_size`` square with the model's
  input channels; MLP inputs have ``model.data_dim`` features. ``kwargs`` are the conditioning
  inputs the model takes (``Conditioning.dummy_kwargs``: ``y``, ``x_self_cond``, ``context``,
  ``x_cond``)."""
  config = _complete(config)
  m = config.model
  if m.name == "mlp":
    shape = (batch_size, m.data_dim)
  else:
    channels = m.in_channels if m.in_channels > 0 else config.data.channels
    shape = (batch_size, config.data.image_size, config.data.image_size, channels)
  x = jnp.zeros(shape, jnp.float32)
  t = jnp.zeros((batch_size,), jnp.int32)
  return x, t, Conditioning.from_config(config).dummy_kwargs(x)


def count_params(params: Any) -> int:
  """Number of scalars in a pytree of arrays (or of ``jax.ShapeDtypeStruct`` from
  ``jax.eval_shape``, so big networks can be counted without allocating them)."""
  return sum(math.prod(leaf.shape) for leaf in jax.tree_util.tree_leaves(params))
