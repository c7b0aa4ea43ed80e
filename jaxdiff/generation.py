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
import numpy as np

from jaxdiff import grids, samplers
from jaxdiff.conditioning import Conditioning
from jaxdiff.processes import as_process

__all__ = ["data_shape", "is_image_config", "model_fn", "sample_from_config", "sampling_grid", "GRID_OPTIONS"]

# config.sample fields that describe the grid (sample.py flags of the same names override them)
GRID_OPTIONS = ("grid", "rho", "shift", "sigma_min", "sigma_max")
RATIO_LIMIT = float(np.exp(grids.LOG_SNR_LIMIT))  # karras grids on processes with an infinite end


def _ratio_ends(process) -> tuple[float, float]:
  """sigma/alpha at the process's two ends, kept finite."""
  ends = np.asarray([process.t_min, process.t_max], np.float32)
  with jax.ensure_compile_time_eval():  # static grid ends, also under an outer jit
    a, s = (np.asarray(v, np.float64) for v in process.alpha_sigma(ends))
  with np.errstate(divide="ignore"):
    r = s / a
  return float(np.clip(r[0], 1.0 / RATIO_LIMIT, RATIO_LIMIT)), float(
    np.clip(r[1], 1.0 / RATIO_LIMIT, RATIO_LIMIT)
  )


def sampling_grid(
  config: ml_collections.ConfigDict, process, num_steps: int, **overrides: Any
) -> dict[str, Any]:
  """`ts` / `spacing` arguments of `jaxdiff.sample` for config.sample's grid (fields overridable).

  grid "": the process's own (a chain's `spacing`; EDM: karras; flow: flow; else uniform t);
  "leading" | "trailing" | "linspace": a chain's classic timesteps; "karras": the Karras sigma/alpha
  grid (rho, sigma_min, sigma_max; default ends: EDM's, else the process's) as the process's times;
  "logsnr" / "uniform": `grids.log_snr` / `grids.uniform`; "flow": SD3's shifted grid (shift;
  default diffusion.flow_shift) read as sigma/(alpha+sigma) on any process.
  """
  s = {k: config.sample[k] for k in GRID_OPTIONS}
  s.update({k: v for k, v in overrides.items() if v is not None})
  proc = as_process(process)
  grid, n = s["grid"], int(num_steps)
  if grid == "":
    return {"spacing": overrides.get("spacing") or config.sample.spacing} if proc.discrete else {}
  if grid in grids.SPACINGS:
    if not proc.discrete:
      raise ValueError(f"grid={grid!r} is a spacing of discrete chains; this run's process is continuous.")
    return {"spacing": grid}
  if grid == "karras":
    lo, hi = _ratio_ends(proc)
    if config.diffusion.process == "edm":
      lo, hi = float(config.diffusion.sigma_min), float(config.diffusion.sigma_max)
    lo = s["sigma_min"] if s["sigma_min"] > 0 else lo
    hi = s["sigma_max"] if s["sigma_max"] > 0 else hi
    return {"ts": grids.to_times(proc, grids.karras(n, lo, hi, float(s["rho"])))}
  if grid == "logsnr":
    return {"ts": grids.log_snr(proc, n)}
  if grid == "uniform":
    return {"ts": grids.uniform(proc, n)}
  if grid == "flow":
    shift = s["shift"] if s["shift"] > 0 else float(config.diffusion.flow_shift)
    levels = grids.flow(n, shift)
    return {"ts": grids.to_times(proc, levels / (1.0 - levels + 1.0 / RATIO_LIMIT))}
  raise ValueError(
    f"unknown grid {grid!r}; choose one of '', karras, logsnr, uniform, flow, {grids.SPACINGS}."
  )


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
  schedule: Any,
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
  # settings for any sampler (eta, variance, order, s_churn): each sampler receives only those it takes
  generic = {k: opts.pop(k, None) for k in ("eta", "variance", "order", "s_churn")}
  generic["order"] = generic["order"] or int(s.order)
  generic["s_churn"] = generic["s_churn"] or (float(s.s_churn) or None)
  if isinstance(sampler, str):
    opts.update(samplers.accepted_options(sampler, **generic))
  grid_kw = {k: opts.pop(k, None) for k in GRID_OPTIONS}
  opts.update(sampling_grid(config, schedule, opts["num_steps"], spacing=opts.pop("spacing"), **grid_kw))
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
