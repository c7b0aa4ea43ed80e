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
from jaxdiff.errors import SamplingError
from jaxdiff.processes import as_process

__all__ = [
  "data_shape",
  "is_image_config",
  "model_fn",
  "sample_from_config",
  "sampling_grid",
  "check_labels",
  "parse_guidance_interval",
  "parse_guidance_schedule",
  "GRID_OPTIONS",
  "GUIDANCE_OPTIONS",
]

# config.sample fields that describe the grid (sample.py flags of the same names override them)
GRID_OPTIONS = ("grid", "rho", "shift", "sigma_min", "sigma_max")
# config.sample fields that modify classifier-free guidance (sample.py flags of the same names)
GUIDANCE_OPTIONS = ("guidance_rescale", "guidance_interval", "guidance_schedule")
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
      raise SamplingError(f"grid={grid!r} is a spacing of discrete chains; this run's process is continuous.")
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
  raise SamplingError(
    f"unknown grid {grid!r}; choose one of '', karras, logsnr, uniform, flow, {grids.SPACINGS}."
  )


def _floats(text: str, what: str) -> list[float]:
  try:
    return [float(p) for p in text.replace(" ", "").split(",") if p != ""]
  except ValueError:
    raise SamplingError(f"{what}={text!r}: expected comma-separated numbers.") from None


def parse_guidance_interval(spec: Any) -> tuple[float, float] | None:
  """config.sample.guidance_interval / --guidance_interval: "lo,hi" (or a pair) in the process's
  time, guidance only where lo <= t <= hi; "" or None: guidance at every step."""
  if spec is None or (isinstance(spec, str) and spec.strip() == ""):
    return None
  vals = _floats(spec, "guidance_interval") if isinstance(spec, str) else [float(v) for v in spec]
  if len(vals) != 2 or any(np.isnan(vals)) or vals[0] > vals[1]:
    raise SamplingError(
      f"guidance_interval={spec!r}: give 'lo,hi' with lo <= hi in the process's time "
      "(timesteps on a vp chain, t in [0, 1] for vpsde / cosine / flow, sigma for edm)."
    )
  return vals[0], vals[1]


def parse_guidance_schedule(spec: Any, num_steps: int) -> np.ndarray | None:
  """config.sample.guidance_schedule / --guidance_schedule: one guidance scale per step, step 0 the
  noisiest. "linear:a,b" (a at the first step to b at the last), "cosine:a,b" (a to b along a
  half cosine), "s1,s2,...,sn" (num_steps scales) or a sequence; "" or None: guidance_scale."""
  if spec is None or (isinstance(spec, str) and spec.strip() == ""):
    return None
  n = int(num_steps)
  if isinstance(spec, str) and ":" in spec:
    kind, _, rest = spec.partition(":")
    kind = kind.strip().lower()
    ends = _floats(rest, f"guidance_schedule {kind}")
    if kind not in ("linear", "cosine") or len(ends) != 2:
      raise SamplingError(
        f"guidance_schedule={spec!r}: use 'linear:a,b', 'cosine:a,b' or {n} comma-separated scales."
      )
    ramp = np.linspace(0.0, 1.0, n) if n > 1 else np.zeros(1)
    if kind == "cosine":
      ramp = 0.5 - 0.5 * np.cos(np.pi * ramp)
    out = ends[0] + ramp * (ends[1] - ends[0])
  else:
    out = np.asarray(_floats(spec, "guidance_schedule") if isinstance(spec, str) else spec, np.float64)
    if out.ndim != 1 or out.shape[0] != n:
      raise SamplingError(
        f"guidance_schedule={spec!r} has {out.size} scale(s) but the run has {n} steps: give {n} "
        "comma-separated scales, or 'linear:a,b' / 'cosine:a,b'."
      )
  if not np.all(np.isfinite(out)):
    raise SamplingError(f"guidance_schedule={spec!r} contains NaN or Inf.")
  return np.asarray(out, np.float32)


def _guidance_settings(s: ml_collections.ConfigDict, opts: dict) -> tuple[float, Any, Any]:
  """(rescale phi, interval, schedule array) from overrides in `opts` (popped), else config.sample."""
  rescale = opts.pop("guidance_rescale", None)
  interval = opts.pop("guidance_interval", None)
  schedule = opts.pop("guidance_schedule", None)
  rescale = float(s.get("guidance_rescale", 0.0) if rescale is None else rescale)
  interval = parse_guidance_interval(s.get("guidance_interval", "") if interval is None else interval)
  schedule = parse_guidance_schedule(
    s.get("guidance_schedule", "") if schedule is None else schedule, opts["num_steps"]
  )
  return rescale, interval, schedule


def is_image_config(config: ml_collections.ConfigDict) -> bool:
  return config.model.name != "mlp"


def data_shape(config: ml_collections.ConfigDict) -> tuple[int, ...]:
  """Per-example shape: (H, W, C) for images, (D,) for points."""
  if is_image_config(config):
    return (int(config.data.image_size), int(config.data.image_size), int(config.data.channels))
  return (int(config.model.data_dim),)


def check_labels(config: ml_collections.ConfigDict, labels: Any, num: int) -> Any:
  """`labels` as int32 [num] (a single class is repeated), or None; SamplingError naming the valid
  classes for labels outside 0 .. num_classes - 1, non-integer labels, a wrong count, or labels
  given to an unconditional model. Traced labels (under jit / vmap) pass unchecked."""
  if labels is None or isinstance(labels, jax.core.Tracer):
    return labels
  classes = int(config.model.num_classes or 0)
  if classes == 0:
    raise SamplingError(
      f"labels={_short(labels)} were given, but the model is unconditional (config.model.num_classes=0): "
      "leave labels out (None)."
    )
  arr = np.asarray(labels)
  if arr.dtype == bool or not (np.issubdtype(arr.dtype, np.integer) or _integral(arr)):
    raise SamplingError(f"labels={_short(labels)} must be integer classes in 0..{classes - 1}.")
  arr = arr.astype(np.int64)
  if arr.ndim == 0:
    arr = np.full((int(num),), int(arr))
  if arr.shape != (int(num),):
    raise SamplingError(
      f"labels has shape {arr.shape}; give one class per sample (shape ({int(num)},)) or a single class."
    )
  bad = arr[(arr < 0) | (arr >= classes)]
  if bad.size:
    raise SamplingError(
      f"labels holds class {int(bad[0])}, outside 0..{classes - 1} (config.model.num_classes={classes}); "
      "labels=None samples the unconditional (null-class) model."
    )
  return jnp.asarray(arr, jnp.int32)


def _integral(arr: np.ndarray) -> bool:
  return bool(
    np.issubdtype(arr.dtype, np.floating) and np.all(np.isfinite(arr)) and np.all(arr == np.round(arr))
  )


def _short(value: Any) -> str:
  text = repr(np.asarray(value).tolist()) if not isinstance(value, str) else repr(value)
  return text if len(text) <= 40 else text[:37] + "..."


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
  need `x_cond` [num, H, W, cond_channels], shared by both branches. config.sample's
  guidance_rescale (phi; 0 = off), guidance_interval ("lo,hi") and guidance_schedule (a scale per
  step, replacing guidance_scale) modify guidance (keywords of the same names override them; at
  guidance scale 1 without a schedule they change nothing and are left out). Other keywords go to
  `jaxdiff.sample` (e.g. `inpaint_mask`, `inpaint_known`, `repaint_resample`, `return_trajectory`).
  """
  s = config.sample
  labels = check_labels(config, labels, num)
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
  generic = {k: opts.pop(k, None) for k in ("eta", "variance", "order", "s_churn", "clipped_eps")}
  generic["order"] = generic["order"] or int(s.order)
  generic["s_churn"] = generic["s_churn"] or (float(s.s_churn) or None)
  if generic["clipped_eps"] is None and not s.get("clipped_eps", True):
    generic["clipped_eps"] = False  # the default (True) is left out: the compiled program stays the same
  if isinstance(sampler, str):
    opts.update(samplers.accepted_options(sampler, **generic))
  grid_kw = {k: opts.pop(k, None) for k in GRID_OPTIONS}
  opts.update(sampling_grid(config, schedule, opts["num_steps"], spacing=opts.pop("spacing"), **grid_kw))
  scale = opts.pop("guidance_scale")
  rescale, interval, scales = _guidance_settings(s, opts)
  cond, uncond = Conditioning.from_config(config).sample_kwargs(
    num, labels, context=context, context_mask=context_mask, x_cond=x_cond
  )
  if not uncond or (scale == 1.0 and scales is None):
    scale, uncond = None, None
  else:  # unused options stay None: the compiled program is plain guidance's
    opts.update(guidance_rescale=rescale if rescale > 0 else None, guidance_interval=interval)
    if scales is not None:
      scale, opts["guidance_schedule"] = None, scales
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
