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


def sample_from_config(config: ml_collections.ConfigDict, model: Any, schedule: Schedule, params: Any,
                       key: jax.Array, num: int, labels: jnp.ndarray | None = None, **overrides: Any):
  """`num` samples with config.sample's sampler settings (any of them overridable by keyword).

  For class-conditional models, `labels` (int [num]) are the requested classes; None asks the
  unconditional (null-class) model. A guidance_scale other than 1 uses classifier-free guidance.
  """
  s = config.sample
  opts = dict(sampler=s.sampler, num_steps=int(s.num_steps), eta=float(s.eta), spacing=s.spacing,
              clip_x0=float(s.clip_x0) if s.clip_x0 else None, guidance_scale=float(s.guidance_scale))
  opts.update({k: v for k, v in overrides.items() if v is not None})
  if opts["sampler"] != s.sampler and overrides.get("eta") is None:
    opts["eta"] = None  # config.sample.eta belongs to the config's sampler: use the other one's default
  scale = opts.pop("guidance_scale")
  cond, uncond = None, None
  num_classes = int(config.model.num_classes)
  if num_classes > 0:
    null = jnp.full((num,), num_classes, jnp.int32)
    if labels is None:
      cond, scale = {"y": null}, None
    else:
      cond, uncond = {"y": jnp.asarray(labels, jnp.int32)}, {"y": null}
      if scale == 1.0:
        scale, uncond = None, None
  else:
    scale = None
  return samplers.sample(
      model_fn(model, params), schedule, (num,) + data_shape(config), key,
      prediction=config.diffusion.prediction, cond=cond, uncond=uncond, guidance_scale=scale,
      variance="learned_range" if config.model.learn_sigma and opts["sampler"] == "ddpm" else "fixed_small",
      self_condition=bool(config.model.self_condition), **opts)
