"""diffusers scheduler configs (``scheduler_config.json``) <-> jaxdiff's ``diffusion.*`` / ``sample.*`` fields.

The chain (betas, number of timesteps, zero-terminal-SNR rescaling), the network's prediction
and the sampler's settings (timestep spacing, x0 clipping; DDPMScheduler -> the ``ddpm`` sampler
over every timestep as ``DDPMPipeline`` runs it, DDIMScheduler -> ``ddim`` with eta 0 and 50
steps as ``DDIMPipeline``) map one to one; what jaxdiff cannot reproduce is refused with a
ConfigError naming the field.

One difference remains when clipping is on (``clip_sample=True``, jaxdiff's ``sample.clip_x0``):
jaxdiff's DDIM re-derives eps from the clipped x0, which is DDIMPipeline's
``use_clipped_model_output=True``; DDIMPipeline's default keeps the unclipped eps.
"""

from __future__ import annotations

from typing import Any

from jaxdiff.errors import ConfigError
from jaxdiff.interop.files import DIFFUSERS_VERSION

__all__ = ["SCHEDULER_FIELDS", "scheduler_overrides", "config_to_scheduler"]

_SCHEDULES = {
  "linear": "linear",
  "scaled_linear": "quadratic",
  "squaredcos_cap_v2": "cosine",
  "sigmoid": "sigmoid",
}
_PREDICTIONS = {"epsilon": "eps", "v_prediction": "v", "sample": "x0"}
_SPACINGS = ("leading", "trailing", "linspace")
_SAMPLERS = {"DDPMScheduler": "ddpm", "DDIMScheduler": "ddim"}
# Keys read (and checked); any other key with a value is refused. `_class_name` / `_diffusers_version` pass.
SCHEDULER_FIELDS = (
  "num_train_timesteps",
  "beta_start",
  "beta_end",
  "beta_schedule",
  "trained_betas",
  "variance_type",
  "clip_sample",
  "clip_sample_range",
  "prediction_type",
  "thresholding",
  "dynamic_thresholding_ratio",
  "sample_max_value",
  "timestep_spacing",
  "steps_offset",
  "rescale_betas_zero_snr",
  "set_alpha_to_one",
)
_DEFAULTS = {
  "num_train_timesteps": 1000,
  "beta_start": 0.0001,
  "beta_end": 0.02,
  "beta_schedule": "linear",
  "trained_betas": None,
  "variance_type": "fixed_small",
  "clip_sample": True,
  "clip_sample_range": 1.0,
  "prediction_type": "epsilon",
  "thresholding": False,
  "timestep_spacing": "leading",
  "steps_offset": 0,
  "rescale_betas_zero_snr": False,
  "set_alpha_to_one": True,
}


def _refuse(field: str, value: Any, why: str) -> ConfigError:
  return ConfigError(f"diffusers scheduler field {field}={value!r} cannot be expressed in jaxdiff: {why}")


def scheduler_overrides(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
  """``{"diffusion": {...}, "sample": {...}}``: the jaxdiff config fields of a diffusers
  ``DDPMScheduler`` / ``DDIMScheduler`` config (a parsed ``scheduler_config.json``)."""
  name = config.get("_class_name", "DDPMScheduler")
  if name not in _SAMPLERS:
    raise _refuse("_class_name", name, f"supported: {sorted(_SAMPLERS)}")
  unknown = sorted(
    k for k, v in config.items() if not k.startswith("_") and k not in SCHEDULER_FIELDS and v is not None
  )
  if unknown:
    raise _refuse(unknown[0], config[unknown[0]], "a scheduler field this converter does not know")
  c = {**_DEFAULTS, **{k: v for k, v in config.items() if not k.startswith("_") and v is not None}}
  if c["trained_betas"] is not None:
    raise _refuse("trained_betas", "[...]", "jaxdiff builds the chain from a named beta_schedule")
  if c["beta_schedule"] not in _SCHEDULES:
    raise _refuse("beta_schedule", c["beta_schedule"], f"supported: {sorted(_SCHEDULES)}")
  if c["prediction_type"] not in _PREDICTIONS:
    raise _refuse("prediction_type", c["prediction_type"], f"supported: {sorted(_PREDICTIONS)}")
  if c["timestep_spacing"] not in _SPACINGS:
    raise _refuse("timestep_spacing", c["timestep_spacing"], f"supported: {_SPACINGS}")
  if c["thresholding"]:
    raise _refuse(
      "thresholding", True, "dynamic thresholding is not implemented; sample.clip_x0 clips statically"
    )
  if int(c["steps_offset"]) and c["timestep_spacing"] == "leading":
    raise _refuse("steps_offset", c["steps_offset"], "jaxdiff's 'leading' spacing starts at 0")
  if name == "DDIMScheduler" and not c["set_alpha_to_one"]:
    raise _refuse("set_alpha_to_one", False, "jaxdiff's samplers end at the clean data (alpha = 1)")
  if name == "DDPMScheduler" and c["variance_type"] not in ("fixed_small", "fixed_small_log"):
    raise _refuse("variance_type", c["variance_type"], "the ddpm sampler's config variance is fixed_small")
  if c["rescale_betas_zero_snr"] and c["prediction_type"] == "epsilon":
    raise _refuse("rescale_betas_zero_snr", True, "zero terminal SNR needs v or sample prediction in jaxdiff")
  steps = int(c["num_train_timesteps"])
  return {
    "diffusion": {
      "process": "vp",
      "schedule": _SCHEDULES[c["beta_schedule"]],
      "num_timesteps": steps,
      "beta_start": float(c["beta_start"]),
      "beta_end": float(c["beta_end"]),
      "rescale_zero_terminal_snr": bool(c["rescale_betas_zero_snr"]),
      "prediction": _PREDICTIONS[c["prediction_type"]],
    },
    "sample": {
      "sampler": _SAMPLERS[name],
      "num_steps": steps if name == "DDPMScheduler" else min(50, steps),
      "eta": 0.0,
      "spacing": c["timestep_spacing"],
      "grid": "",
      "clip_x0": float(c["clip_sample_range"]) if c["clip_sample"] else 0.0,
    },
  }


def config_to_scheduler(config: Any) -> dict[str, Any]:
  """The diffusers ``scheduler_config.json`` of a jaxdiff config (its ``diffusion`` and ``sample``
  sections): a DDPMScheduler for the ``ddpm`` sampler, else a DDIMScheduler. ConfigError names the
  field diffusers cannot express."""
  d, s = config.diffusion, config.sample
  if d.process != "vp":
    raise ConfigError(
      f"config.diffusion.process={d.process!r}: diffusers' DDPM/DDIM schedulers are the 'vp' chain"
    )
  names = {v: k for k, v in _SCHEDULES.items()}
  if d.schedule not in names:
    raise ConfigError(f"config.diffusion.schedule={d.schedule!r} has no diffusers beta_schedule")
  preds = {v: k for k, v in _PREDICTIONS.items()}
  if d.prediction not in preds:
    raise ConfigError(f"config.diffusion.prediction={d.prediction!r} has no diffusers prediction_type")
  ddpm = s.sampler == "ddpm"
  if d.schedule == "sigmoid" and not ddpm:
    raise ConfigError(
      "config.diffusion.schedule='sigmoid' exists only in diffusers' DDPMScheduler, which needs "
      f"config.sample.sampler='ddpm' (got {s.sampler!r})"
    )
  if s.spacing not in _SPACINGS:
    raise ConfigError(f"config.sample.spacing={s.spacing!r} has no diffusers timestep_spacing")
  out = {
    "_class_name": "DDPMScheduler" if ddpm else "DDIMScheduler",
    "_diffusers_version": DIFFUSERS_VERSION,
    "num_train_timesteps": int(d.num_timesteps),
    "beta_start": float(d.beta_start),
    "beta_end": float(d.beta_end),
    "beta_schedule": names[d.schedule],
    "trained_betas": None,
    "clip_sample": bool(s.clip_x0),
    "clip_sample_range": float(s.clip_x0) if s.clip_x0 else 1.0,
    "prediction_type": preds[d.prediction],
    "thresholding": False,
    "timestep_spacing": s.spacing,
    "steps_offset": 0,
    "rescale_betas_zero_snr": bool(d.rescale_zero_terminal_snr),
  }
  if ddpm:
    out["variance_type"] = "fixed_small"
  else:
    out["set_alpha_to_one"] = True
  return out
