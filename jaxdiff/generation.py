"""Sampling from a trained model described by a config: shapes, conditioning and sampler defaults.

The training loop's periodic grids and sample.py both come through here, so a model is sampled
the same way everywhere. The network's parameters enter the compiled sampler as arguments
(`bind`), so sampling again with new parameters does not recompile.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from jaxdiff import samplers
from jaxdiff.conditioning import Conditioning
from jaxdiff.schedules import Schedule

__all__ = ["data_shape", "is_image_config", "model_fn", "sample_from_config"]


def is_image_config(config: ml_collections.ConfigDict) -> bool:
  return config.model.name != "mlp"


def data_shape(config: ml_collections.ConfigDict) -> tuple[int, ...]:
  """Per-example shape: (H, W, C) for images, (D,) for points."""
  if is_image_config(config):
    return (int(config.data.image_size), int(config.data.image_size), int(config.data.channels))
  return (int(config.model.data_dim),)


def model_fn(model: Any, params: Any) -> jax.tree_util.Partial:
  """model_fn(x_t, t, **cond) for the samplers; `params` stay leaves (no recompilation per params)."""
  return samplers.bind(model.apply, {"params": params})


def sample_from_config(
  config: ml_collections.ConfigDict,
  model: Any,
  schedule: Schedule,
  params: Any,
  key: jax.Array,
  num: int,
  labels: jnp.ndarray | None = None,
  *,
  context: jnp.ndarray | None = None,
  context_mask: jnp.ndarray | None = None,
  x_cond: jnp.ndarray | None = None,
  **overrides: Any,
):
  """`num` samples with config.sample's sampler settings (any of them overridable by keyword).

  For class-conditional models, `labels` (int [num]) are the requested classes; None asks the
  unconditional (null-class) model. Cross-attention models take `context` ([num, L, D] floats,
  or int tokens [num, L] for `model.context_vocab > 0`) and optionally `context_mask` [num, L];
  None is the null context. A guidance_scale other than 1 uses classifier-free guidance when
  labels or a context are given: the unconditional branch has the null class and the null
  context (an all-False context mask). Image-conditioned models (`model.cond_channels > 0`)
  need `x_cond` [num, H, W, cond_channels], shared by both branches. Other keywords go to
  `jaxdiff.sample` (e.g. `inpaint_mask`, `inpaint_known`, `repaint_resample`, `return_trajectory`).
  """
  s = config.sample
  opts = dict(
    num_steps=int(s.num_steps),
    spacing=s.spacing,
    clip_x0=float(s.clip_x0) if s.clip_x0 else None,
    guidance_scale=float(s.guidance_scale),
  )
  opts.update({k: v for k, v in overrides.items() if v is not None})
  sampler = opts.pop("sampler", s.sampler)
  if sampler == s.sampler:
    opts.setdefault("eta", float(s.eta))  # config.sample.eta belongs to the config's sampler
  if config.model.learn_sigma:
    opts.setdefault("variance", "learned_range")
  # eta and variance are settings for any sampler: each sampler receives only those it takes
  generic = {"eta": opts.pop("eta", None), "variance": opts.pop("variance", None)}
  if isinstance(sampler, str):
    opts.update(samplers.accepted_options(sampler, **generic))
  scale = opts.pop("guidance_scale")
  cond, uncond = Conditioning.from_config(config).sample_kwargs(
    num, labels, context=context, context_mask=context_mask, x_cond=x_cond
  )
  if not uncond or scale == 1.0:
    scale, uncond = None, None
  return samplers.sample(
    model_fn(model, params),
    schedule,
    (num,) + data_shape(config),
    key,
    prediction=config.diffusion.prediction,
    cond=cond or None,
    uncond=uncond,
    guidance_scale=scale,
    self_condition=bool(config.model.self_condition),
    sampler=sampler,
    **opts,
  )
