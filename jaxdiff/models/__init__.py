"""Flax linen denoising networks and the one factory that builds them from a config.

``create_model(config)`` reads ``config.model`` (``name``: ``"unet"`` or ``"mlp"``), so the
training loop, ``sample.py`` and users all build the same network from the same config;
``dummy_inputs(config)`` gives the arguments to ``init`` it with.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxdiff.models.layers import CONTEXT_NULLS, timestep_embedding
from jaxdiff.models.mlp import MLP
from jaxdiff.models.unet import UNet

__all__ = ["UNet", "MLP", "create_model", "dummy_inputs", "count_params", "timestep_embedding"]

MODEL_NAMES = ("unet", "mlp")


def _section(config: Any, name: str) -> Any:
  """``config.<name>`` or None (configs are ml_collections ConfigDicts or plain mappings)."""
  if isinstance(config, Mapping):
    return config.get(name)
  return getattr(config, name, None)


def _get(section: Any, key: str, default: Any) -> Any:
  if section is None:
    return default
  if isinstance(section, Mapping):
    return section.get(key, default)
  return section.get(key, default) if hasattr(section, "get") else getattr(section, key, default)


def _dtype(value: Any, field: str) -> Any:
  try:
    return jnp.dtype(value)
  except TypeError as e:
    raise ValueError(f"config.{field}={value!r} is not a dtype name (e.g. 'float32', 'bfloat16')") from e


def _positive_int(value: Any, field: str, minimum: int = 1) -> int:
  if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
    raise ValueError(f"config.{field} must be an integer >= {minimum}, got {value!r}")
  return value


def _int_tuple(value: Any, field: str) -> tuple[int, ...]:
  try:
    out = tuple(int(v) for v in value)
  except TypeError as e:
    raise ValueError(f"config.{field} must be a sequence of integers, got {value!r}") from e
  if any(v < 1 for v in out):
    raise ValueError(f"config.{field} must hold positive integers, got {value!r}")
  return out


def create_model(config: Any) -> nn.Module:
  """Build the network described by ``config.model`` (an ml_collections config, the
  ``model`` section alone, or a mapping). Fields missing from the config take the defaults of
  ``configs/default.py``; ``config.data.channels`` / ``config.diffusion.num_timesteps`` fill in
  what the model section leaves open. Invalid values raise a ``ValueError`` naming the field.
  """
  m = _section(config, "model")
  if m is None:
    m, config = config, {}
  data, diffusion = _section(config, "data"), _section(config, "diffusion")
  name = _get(m, "name", "unet")
  common = dict(
    dropout=float(_get(m, "dropout", 0.0)),
    learn_sigma=bool(_get(m, "learn_sigma", False)),
    num_classes=_positive_int(_get(m, "num_classes", 0), "model.num_classes", 0),
    self_condition=bool(_get(m, "self_condition", False)),
    dtype=_dtype(_get(m, "dtype", "float32"), "model.dtype"),
    param_dtype=_dtype(_get(m, "param_dtype", "float32"), "model.param_dtype"),
    remat=bool(_get(m, "remat", False)),
    out_channels=int(_get(m, "out_channels", -1)),
  )
  if not 0.0 <= common["dropout"] < 1.0:
    raise ValueError(f"config.model.dropout must be in [0, 1), got {common['dropout']}")

  if name == "unet":
    in_channels = int(_get(m, "in_channels", -1))
    if in_channels <= 0:
      in_channels = int(_get(data, "channels", -1))
    attention_impl = _get(m, "attention_impl", "auto")
    if attention_impl not in ("auto", "xla", "cudnn"):
      raise ValueError(
        f"config.model.attention_impl must be 'auto', 'xla' or 'cudnn', got {attention_impl!r}"
      )
    channel_mult = _int_tuple(_get(m, "channel_mult", (1, 2, 2)), "model.channel_mult")
    if not channel_mult:
      raise ValueError("config.model.channel_mult must name at least one level")
    context_null = _get(m, "context_null", "learned")
    if context_null not in CONTEXT_NULLS:
      raise ValueError(f"config.model.context_null must be one of {CONTEXT_NULLS}, got {context_null!r}")
    return UNet(
      base_channels=_positive_int(_get(m, "base_channels", 64), "model.base_channels"),
      channel_mult=channel_mult,
      num_res_blocks=_positive_int(_get(m, "num_res_blocks", 2), "model.num_res_blocks", 0),
      attention_resolutions=_int_tuple(
        _get(m, "attention_resolutions", (16,)), "model.attention_resolutions"
      ),
      linear_attention_resolutions=_int_tuple(
        _get(m, "linear_attention_resolutions", ()), "model.linear_attention_resolutions"
      ),
      num_heads=int(_get(m, "num_heads", 4)),
      head_dim=int(_get(m, "head_dim", -1)),
      resblock_updown=bool(_get(m, "resblock_updown", False)),
      conv_resample=bool(_get(m, "conv_resample", True)),
      use_scale_shift_norm=bool(_get(m, "use_scale_shift_norm", False)),
      num_groups=_positive_int(_get(m, "num_groups", 32), "model.num_groups"),
      in_channels=in_channels,
      attention_impl=attention_impl,
      context_dim=_positive_int(_get(m, "context_dim", 0), "model.context_dim", 0),
      context_vocab=_positive_int(_get(m, "context_vocab", 0), "model.context_vocab", 0),
      context_null=context_null,
      context_null_length=_positive_int(_get(m, "context_null_length", 1), "model.context_null_length"),
      transformer_ff_mult=_positive_int(_get(m, "transformer_ff_mult", 4), "model.transformer_ff_mult"),
      cond_channels=_positive_int(_get(m, "cond_channels", 0), "model.cond_channels", 0),
      **common,
    )
  if name == "mlp":
    for field in ("context_dim", "cond_channels"):
      if int(_get(m, field, 0)):
        raise ValueError(
          f"config.model.{field}={_get(m, field, 0)} needs model.name='unet' "
          "(the MLP takes neither a context nor a conditioning image)"
        )
    return MLP(
      hidden_dim=_positive_int(_get(m, "hidden_dim", 128), "model.hidden_dim"),
      num_layers=_positive_int(_get(m, "num_layers", 4), "model.num_layers", 0),
      time_embedding=_get(m, "time_embedding", "sinusoidal"),
      num_timesteps=_positive_int(_get(diffusion, "num_timesteps", 1000), "diffusion.num_timesteps"),
      in_channels=int(_get(m, "data_dim", -1)),
      **common,
    )
  raise ValueError(f"config.model.name must be one of {MODEL_NAMES}, got {name!r}")


def dummy_inputs(config: Any, batch_size: int = 1) -> tuple[jax.Array, jax.Array, dict]:
  """Zero inputs ``(x, t, kwargs)`` of the right shapes to ``init`` the model of ``config``:
  ``model.init(rng, x, t, **kwargs)``. Images are ``data.image_size`` square with the model's
  input channels; MLP inputs have ``model.data_dim`` features. ``kwargs`` holds ``y`` when the
  model is class-conditional, ``x_self_cond`` when it self-conditions, ``context`` (one token:
  int for ``model.context_vocab > 0``, else ``[batch, 1, context_dim]`` floats) when it
  cross-attends and ``x_cond`` when it takes a conditioning image."""
  m = _section(config, "model")
  data = _section(config, "data")
  name = _get(m, "name", "unet")
  if name == "mlp":
    shape = (batch_size, int(_get(m, "data_dim", 2)))
  else:
    channels = int(_get(m, "in_channels", -1))
    if channels <= 0:
      channels = int(_get(data, "channels", 1))
    size = int(_get(data, "image_size", 32))
    shape = (batch_size, size, size, channels)
  x = jnp.zeros(shape, jnp.float32)
  t = jnp.zeros((batch_size,), jnp.int32)
  kwargs: dict = {}
  if int(_get(m, "num_classes", 0)) > 0:
    kwargs["y"] = jnp.zeros((batch_size,), jnp.int32)
  if bool(_get(m, "self_condition", False)):
    kwargs["x_self_cond"] = jnp.zeros(shape, jnp.float32)
  context_dim = int(_get(m, "context_dim", 0)) if name != "mlp" else 0
  if context_dim > 0:
    if int(_get(m, "context_vocab", 0)) > 0:
      kwargs["context"] = jnp.zeros((batch_size, 1), jnp.int32)
    else:
      kwargs["context"] = jnp.zeros((batch_size, 1, context_dim), jnp.float32)
  cond_channels = int(_get(m, "cond_channels", 0)) if name != "mlp" else 0
  if cond_channels > 0:
    kwargs["x_cond"] = jnp.zeros(shape[:-1] + (cond_channels,), jnp.float32)
  return x, t, kwargs


def count_params(params: Any) -> int:
  """Number of scalars in a pytree of arrays (or of ``jax.ShapeDtypeStruct`` from
  ``jax.eval_shape``, so big networks can be counted without allocating them)."""
  return sum(math.prod(leaf.shape) for leaf in jax.tree_util.tree_leaves(params))
