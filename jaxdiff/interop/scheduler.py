"""diffusers scheduler configs (``scheduler_config.json``) <-> jaxdiff's ``diffusion.*`` / ``sample.*`` fields.

The chain (betas, number of timesteps, zero-terminal-SNR rescaling), the network's prediction
and the sampler's settings map one to one; what jaxdiff cannot reproduce is refused with a
ConfigError naming the field, and every field's type is checked first.

    DDPMScheduler                -> vp chain, the ``ddpm`` sampler over every timestep (DDPMPipeline);
                                    variance_type fixed_small(_log) / learned_range (model.learn_sigma)
    DDIMScheduler                -> vp chain, ``ddim`` (eta 0, 50 steps, as DDIMPipeline); with
                                    clip_sample, DDIMPipeline's default use_clipped_model_output=False
                                    (``sample.clipped_eps = False``)
    DPMSolverMultistepScheduler  -> vp chain, ``dpmpp_2m`` / ``dpmpp_3m`` (dpmsolver++, solver_order 2 / 3)
                                    or ``dpmpp_2m_sde`` (sde-dpmsolver++), 25 steps, trailing spacing
    EulerDiscreteScheduler       -> vp chain, ``euler`` (50 steps, leading / trailing spacing)
    FlowMatchEulerDiscreteScheduler -> the ``flow`` process (velocity eps - x0 prediction), ``euler`` on
                                    SD3's shifted grid (``diffusion.flow_shift``), 50 steps; the network
                                    reads 1000 t (``model.time_input = "unit"``), as diffusers feeds it

    EDMEulerScheduler            -> the ``edm`` process (sigma_min, sigma_max, sigma_data, rho), EDM's
                                    preconditioned network (``prediction = "edm"``), ``euler`` (50 steps)
                                    on the Karras grid (sigma_schedule "karras") or the log-uniform one
                                    ("exponential": ``sample.grid = "logsnr"``); the network reads EDM's
                                    c_noise = ln(sigma) / 4 unscaled (``model.time_input = "c_noise"``),
                                    as diffusers feeds it
    EDMDPMSolverMultistepScheduler -> the same, with ``dpmpp_2m`` / ``dpmpp_3m`` / ``dpmpp_2m_sde``, 25 steps

An EDM ``v_prediction`` network (D = c_skip x - c_out F) is the ``epsilon`` one with F negated:
``edm_output_sign`` says so, and the import negates the UNet's last convolution (exact in floating
point), so it exports back as ``epsilon``.

Exports go the other way: ddpm -> DDPMScheduler, dpmpp_2m / dpmpp_3m / dpmpp_2m_sde ->
DPMSolverMultistepScheduler, any other sampler on a vp chain -> DDIMScheduler, a flow workdir ->
FlowMatchEulerDiscreteScheduler, an EDM workdir whose network reads ``c_noise`` ->
EDMDPMSolverMultistepScheduler (dpmpp_*) or EDMEulerScheduler (any other sampler). An EDM network
that reads jaxdiff's own ``log_sigma`` time input (1000 c_noise) is refused: no UNet2DModel
embedding takes that from diffusers' c_noise.
"""

from __future__ import annotations

import logging
from typing import Any

from jaxdiff.errors import ConfigError
from jaxdiff.interop.fields import check_field_types
from jaxdiff.interop.files import DIFFUSERS_VERSION

__all__ = [
  "SCHEDULER_FIELDS",
  "SCHEDULERS",
  "EDM_SCHEDULERS",
  "scheduler_overrides",
  "config_to_scheduler",
  "edm_output_sign",
]

log = logging.getLogger(__name__)

_SCHEDULES = {
  "linear": "linear",
  "scaled_linear": "quadratic",
  "squaredcos_cap_v2": "cosine",
  "sigmoid": "sigmoid",
}
_PREDICTIONS = {"epsilon": "eps", "v_prediction": "v", "sample": "x0"}
_SPACINGS = ("leading", "trailing", "linspace")
_DPM = {  # (algorithm_type, solver_order) -> sampler
  ("dpmsolver++", 2): "dpmpp_2m",
  ("dpmsolver++", 3): "dpmpp_3m",
  ("sde-dpmsolver++", 2): "dpmpp_2m_sde",
}
# Type of every field read (jaxdiff.interop.fields.KINDS), for all scheduler classes.
_KINDS = {
  "num_train_timesteps": "pos_int",
  "beta_start": "pos_num",
  "beta_end": "pos_num",
  "beta_schedule": "str",
  "trained_betas": "num_list",
  "variance_type": "str",
  "clip_sample": "bool",
  "clip_sample_range": "pos_num",
  "prediction_type": "str",
  "thresholding": "bool",
  "dynamic_thresholding_ratio": "num",
  "sample_max_value": "num",
  "timestep_spacing": "str",
  "steps_offset": "nonneg_int",
  "rescale_betas_zero_snr": "bool",
  "set_alpha_to_one": "bool",
  "solver_order": "pos_int",
  "algorithm_type": "str",
  "solver_type": "str",
  "lower_order_final": "bool",
  "euler_at_final": "bool",
  "use_karras_sigmas": "bool",
  "use_exponential_sigmas": "bool",
  "use_beta_sigmas": "bool",
  "use_lu_lambdas": "bool",
  "use_flow_sigmas": "bool",
  "flow_shift": "pos_num",
  "final_sigmas_type": "str",
  "lambda_min_clipped": "real",
  "use_dynamic_shifting": "bool",
  "time_shift_type": "str",
  "interpolation_type": "str",
  "sigma_min": "pos_num",
  "sigma_max": "pos_num",
  "timestep_type": "str",
  "shift": "pos_num",
  "base_shift": "num",
  "max_shift": "num",
  "base_image_seq_len": "pos_int",
  "max_image_seq_len": "pos_int",
  "invert_sigmas": "bool",
  "shift_terminal": "num",
  "stochastic_sampling": "bool",
  "sigma_data": "pos_num",
  "sigma_schedule": "str",
  "rho": "pos_num",
}
_CHAIN = (
  "num_train_timesteps",
  "beta_start",
  "beta_end",
  "beta_schedule",
  "trained_betas",
  "prediction_type",
)
_THRESHOLD = ("thresholding", "dynamic_thresholding_ratio", "sample_max_value")
_SIGMA_CHOICES = ("use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas")
_EDM = ("sigma_min", "sigma_max", "sigma_data", "sigma_schedule", "num_train_timesteps", "prediction_type", "rho",
        "final_sigmas_type")  # fmt: skip
EDM_SCHEDULERS = ("EDMEulerScheduler", "EDMDPMSolverMultistepScheduler")
# Keys each class reads (and checks); any other key with a value is refused. `_`-keys pass.
SCHEDULERS: dict[str, tuple[str, ...]] = {
  "DDPMScheduler": _CHAIN + _THRESHOLD + (
    "variance_type", "clip_sample", "clip_sample_range", "timestep_spacing", "steps_offset",
    "rescale_betas_zero_snr",
  ),
  "DDIMScheduler": _CHAIN + _THRESHOLD + (
    "variance_type", "clip_sample", "clip_sample_range", "timestep_spacing", "steps_offset",
    "rescale_betas_zero_snr", "set_alpha_to_one",
  ),
  "DPMSolverMultistepScheduler": _CHAIN + _THRESHOLD + _SIGMA_CHOICES + (
    "solver_order", "algorithm_type", "solver_type", "lower_order_final", "euler_at_final", "use_lu_lambdas",
    "use_flow_sigmas", "flow_shift", "final_sigmas_type", "lambda_min_clipped", "variance_type",
    "timestep_spacing", "steps_offset", "rescale_betas_zero_snr", "use_dynamic_shifting", "time_shift_type",
  ),
  "EulerDiscreteScheduler": _CHAIN + _SIGMA_CHOICES + (
    "interpolation_type", "sigma_min", "sigma_max", "timestep_spacing", "timestep_type", "steps_offset",
    "rescale_betas_zero_snr", "final_sigmas_type",
  ),
  "FlowMatchEulerDiscreteScheduler": _SIGMA_CHOICES + (
    "num_train_timesteps", "shift", "use_dynamic_shifting", "base_shift", "max_shift", "base_image_seq_len",
    "max_image_seq_len", "invert_sigmas", "shift_terminal", "time_shift_type", "stochastic_sampling",
  ),
  "EDMEulerScheduler": _EDM,
  "EDMDPMSolverMultistepScheduler": _EDM + _THRESHOLD + (
    "solver_order", "algorithm_type", "solver_type", "lower_order_final", "euler_at_final",
  ),
}  # fmt: skip
SCHEDULER_FIELDS = tuple(sorted({f for fields in SCHEDULERS.values() for f in fields}))
_DEFAULTS = {
  "num_train_timesteps": 1000,
  "beta_start": 0.0001,
  "beta_end": 0.02,
  "beta_schedule": "linear",
  "trained_betas": None,
  "clip_sample": True,
  "clip_sample_range": 1.0,
  "prediction_type": "epsilon",
  "thresholding": False,
  "steps_offset": 0,
  "rescale_betas_zero_snr": False,
  "set_alpha_to_one": True,
  "solver_order": 2,
  "algorithm_type": "dpmsolver++",
  "solver_type": "midpoint",
  "lower_order_final": True,
  "euler_at_final": False,
  "use_karras_sigmas": False,
  "use_exponential_sigmas": False,
  "use_beta_sigmas": False,
  "use_lu_lambdas": False,
  "use_flow_sigmas": False,
  "final_sigmas_type": "zero",
  "lambda_min_clipped": float("-inf"),
  "use_dynamic_shifting": False,
  "interpolation_type": "linear",
  "timestep_type": "discrete",
  "shift": 1.0,
  "invert_sigmas": False,
  "shift_terminal": None,
  "stochastic_sampling": False,
}
# DDPMScheduler variance_type -> the ddpm sampler's variance (learned_range: config.model.learn_sigma)
_VARIANCES = {
  "fixed_small": "fixed_small",
  "fixed_small_log": "fixed_small",
  "learned_range": "learned_range",
}
_NUM_STEPS = {"DDIMScheduler": 50, "DPMSolverMultistepScheduler": 25, "EulerDiscreteScheduler": 50}


def _refuse(field: str, value: Any, why: str) -> ConfigError:
  return ConfigError(f"diffusers scheduler field {field}={value!r} cannot be expressed in jaxdiff: {why}")


def _require(c: dict, field: str, want: Any, why: str) -> None:
  if c[field] != want:
    raise _refuse(field, c[field], why)


def scheduler_overrides(
  config: dict[str, Any], where: str = "scheduler_config.json"
) -> dict[str, dict[str, Any]]:
  """``{"diffusion": {...}, "sample": {...}[, "model": {...}]}``: the jaxdiff config fields of a
  diffusers scheduler config (a parsed ``scheduler_config.json``, named `where` in messages;
  the classes of ``SCHEDULERS``). ConfigError naming the first field of a wrong type or that
  jaxdiff cannot reproduce."""
  name = config.get("_class_name", "DDPMScheduler")
  if not isinstance(name, str) or name not in SCHEDULERS:
    raise _refuse("_class_name", name, f"supported: {sorted(SCHEDULERS)}")
  known = SCHEDULERS[name]
  unknown = sorted(k for k, v in config.items() if not k.startswith("_") and k not in known and v is not None)
  if unknown:
    raise _refuse(unknown[0], config[unknown[0]], f"a {name} field this converter does not know")
  check_field_types(config, _KINDS, where)
  c = {**_DEFAULTS, **{k: v for k, v in config.items() if not k.startswith("_") and v is not None}}
  for field in _SIGMA_CHOICES:
    _require(c, field, False, "jaxdiff reads the scheduler's own sigma spacing only")
  if name == "FlowMatchEulerDiscreteScheduler":
    return _flow_overrides(c)
  if name in EDM_SCHEDULERS:
    return _edm_overrides(name, {**_EDM_DEFAULTS, **c})
  diffusion = _chain(c)
  if name in ("DDPMScheduler", "DDIMScheduler"):
    sample = _ddpm_ddim(name, c)
  elif name == "DPMSolverMultistepScheduler":
    sample = _dpm_solver(c)
  else:
    sample = _euler(c)
  out = {"diffusion": diffusion, "sample": sample}
  if c.get("variance_type") == "learned_range":
    out["model"] = {"learn_sigma": True}
  return out


def _chain(c: dict) -> dict[str, Any]:
  """diffusion.* of a discrete VP chain; the checks every VP scheduler shares."""
  if c["trained_betas"] is not None:
    raise _refuse("trained_betas", "[...]", "jaxdiff builds the chain from a named beta_schedule")
  if c["beta_schedule"] not in _SCHEDULES:
    raise _refuse("beta_schedule", c["beta_schedule"], f"supported: {sorted(_SCHEDULES)}")
  if c["prediction_type"] not in _PREDICTIONS:
    raise _refuse("prediction_type", c["prediction_type"], f"supported: {sorted(_PREDICTIONS)}")
  if c.get("timestep_spacing", "leading") not in _SPACINGS:
    raise _refuse("timestep_spacing", c["timestep_spacing"], f"supported: {_SPACINGS}")
  if c["thresholding"]:
    raise _refuse(
      "thresholding", True, "dynamic thresholding is not implemented; sample.clip_x0 clips statically"
    )
  if c["rescale_betas_zero_snr"] and c["prediction_type"] == "epsilon":
    raise _refuse("rescale_betas_zero_snr", True, "zero terminal SNR needs v or sample prediction in jaxdiff")
  return {
    "process": "vp",
    "schedule": _SCHEDULES[c["beta_schedule"]],
    "num_timesteps": int(c["num_train_timesteps"]),
    "beta_start": float(c["beta_start"]),
    "beta_end": float(c["beta_end"]),
    "rescale_zero_terminal_snr": bool(c["rescale_betas_zero_snr"]),
    "prediction": _PREDICTIONS[c["prediction_type"]],
  }


def _spacing(c: dict, allowed: tuple[str, ...], name: str) -> str:
  spacing = c.get("timestep_spacing", "leading")
  if spacing not in allowed:
    raise _refuse(
      "timestep_spacing", spacing,
      f"{name} places its {spacing!r} timesteps differently from jaxdiff's spacing of that name; "
      f"{' / '.join(repr(a) for a in allowed)} give the same timesteps (set it in scheduler_config.json)",
    )  # fmt: skip
  if int(c["steps_offset"]) and spacing == "leading":
    raise _refuse("steps_offset", c["steps_offset"], "jaxdiff's 'leading' spacing starts at 0")
  return spacing


def _ddpm_ddim(name: str, c: dict) -> dict[str, Any]:
  spacing = _spacing(c, _SPACINGS, name)
  steps = int(c["num_train_timesteps"])
  out = {
    "sampler": "ddpm" if name == "DDPMScheduler" else "ddim",
    "num_steps": steps if name == "DDPMScheduler" else min(_NUM_STEPS[name], steps),
    "eta": 0.0,
    "spacing": spacing,
    "grid": "",
    "clip_x0": float(c["clip_sample_range"]) if c["clip_sample"] else 0.0,
  }
  if name == "DDIMScheduler":
    if not c["set_alpha_to_one"]:
      raise _refuse("set_alpha_to_one", False, "jaxdiff's samplers end at the clean data (alpha = 1)")
    out["clipped_eps"] = False  # DDIMPipeline's default, use_clipped_model_output=False
  else:
    variance = c.get("variance_type") or "fixed_small"
    if variance not in _VARIANCES:
      raise _refuse(
        "variance_type", variance, f"a workdir's ddpm sampler takes {sorted(_VARIANCES)} (learned_range: "
        "the model's extra output channels)",
      )  # fmt: skip
  return out


def _dpm_solver(c: dict) -> dict[str, Any]:
  key = (c["algorithm_type"], int(c["solver_order"]))
  if key not in _DPM:
    raise _refuse(
      "algorithm_type" if c["algorithm_type"] not in ("dpmsolver++", "sde-dpmsolver++") else "solver_order",
      key[0] if c["algorithm_type"] not in ("dpmsolver++", "sde-dpmsolver++") else key[1],
      "supported: dpmsolver++ with solver_order 2 or 3, sde-dpmsolver++ with solver_order 2",
    )
  _require(c, "solver_type", "midpoint", "jaxdiff's DPM-Solver++ multistep update is the midpoint form")
  _require(c, "lower_order_final", True, "jaxdiff's multistep solvers lower their order at the end")
  for field in ("euler_at_final", "use_lu_lambdas", "use_flow_sigmas", "use_dynamic_shifting"):
    _require(c, field, False, "not implemented")
  _require(c, "final_sigmas_type", "zero", "jaxdiff's samplers end at sigma = 0")
  if c["lambda_min_clipped"] != float("-inf"):
    raise _refuse("lambda_min_clipped", c["lambda_min_clipped"], "not implemented")
  if c.get("variance_type") not in (None, "learned_range"):
    raise _refuse("variance_type", c["variance_type"], "supported: null or learned_range (channels unused)")
  steps = int(c["num_train_timesteps"])
  return {
    "sampler": _DPM[key],
    "num_steps": min(_NUM_STEPS["DPMSolverMultistepScheduler"], steps),
    "eta": 1.0 if key[0].startswith("sde") else 0.0,
    "spacing": _spacing(c, ("trailing",), "DPMSolverMultistepScheduler"),
    "grid": "",
    "clip_x0": 0.0,
  }


def _euler(c: dict) -> dict[str, Any]:
  _require(c, "interpolation_type", "linear", "jaxdiff's Euler steps between the chain's own levels")
  _require(c, "timestep_type", "discrete", "jaxdiff's chains take integer timesteps")
  _require(c, "final_sigmas_type", "zero", "jaxdiff's samplers end at sigma = 0")
  for field in ("sigma_min", "sigma_max"):
    if c.get(field) is not None:
      raise _refuse(field, c[field], "used only with karras / exponential / beta sigmas")
  steps = int(c["num_train_timesteps"])
  return {
    "sampler": "euler",
    "num_steps": min(_NUM_STEPS["EulerDiscreteScheduler"], steps),
    "eta": 0.0,
    "spacing": _spacing(c, ("leading", "trailing"), "EulerDiscreteScheduler"),
    "grid": "",
    "clip_x0": 0.0,
  }


def _flow_overrides(c: dict) -> dict[str, dict[str, Any]]:
  for field in ("use_dynamic_shifting", "invert_sigmas", "stochastic_sampling"):
    _require(c, field, False, "not implemented")
  if c["shift_terminal"] is not None:
    raise _refuse("shift_terminal", c["shift_terminal"], "not implemented")
  if int(c["num_train_timesteps"]) != 1000:
    raise _refuse("num_train_timesteps", c["num_train_timesteps"], "jaxdiff's flow grid ends at 1/1000")
  return {
    "diffusion": {"process": "flow", "prediction": "flow", "flow_shift": float(c["shift"])},
    "sample": {"sampler": "euler", "num_steps": 50, "eta": 0.0, "grid": "", "clip_x0": 0.0},
    "model": {"time_input": "unit"},
  }


_EDM_DEFAULTS = {
  "sigma_min": 0.002,
  "sigma_max": 80.0,
  "sigma_data": 0.5,
  "sigma_schedule": "karras",
  "rho": 7.0,
}
_EDM_GRIDS = {"karras": "", "exponential": "logsnr"}  # sigma_schedule -> config.sample.grid


def edm_output_sign(config: dict[str, Any]) -> float:
  """-1.0 for a diffusers EDM scheduler config with ``prediction_type="v_prediction"`` (its network's
  F enters D with c_out negated), else 1.0: the factor on the network's output that makes it
  jaxdiff's ``prediction="edm"``."""
  if config.get("_class_name") in EDM_SCHEDULERS and config.get("prediction_type") == "v_prediction":
    return -1.0
  return 1.0


def _edm_overrides(name: str, c: dict) -> dict[str, dict[str, Any]]:
  if c["sigma_schedule"] not in _EDM_GRIDS:
    raise _refuse("sigma_schedule", c["sigma_schedule"], f"supported: {sorted(_EDM_GRIDS)}")
  if c["prediction_type"] not in ("epsilon", "v_prediction"):
    raise _refuse(
      "prediction_type", c["prediction_type"], "diffusers' EDM schedulers take epsilon or v_prediction"
    )
  if not c["sigma_min"] < c["sigma_max"]:
    raise _refuse("sigma_min", c["sigma_min"], f"it must be below sigma_max={c['sigma_max']}")
  _require(c, "final_sigmas_type", "zero", "jaxdiff's samplers end at sigma = 0")
  sample = {"grid": _EDM_GRIDS[c["sigma_schedule"]], "eta": 0.0, "clip_x0": 0.0}
  if name == "EDMEulerScheduler":
    sample.update(sampler="euler", num_steps=50, s_churn=0.0)
  else:
    key = (c["algorithm_type"], int(c["solver_order"]))
    if key not in _DPM:
      raise _refuse(
        "algorithm_type" if c["algorithm_type"] not in ("dpmsolver++", "sde-dpmsolver++") else "solver_order",
        key[0] if c["algorithm_type"] not in ("dpmsolver++", "sde-dpmsolver++") else key[1],
        "supported: dpmsolver++ with solver_order 2 or 3, sde-dpmsolver++ with solver_order 2",
      )
    _require(c, "solver_type", "midpoint", "jaxdiff's DPM-Solver++ multistep update is the midpoint form")
    _require(c, "lower_order_final", True, "jaxdiff's multistep solvers lower their order at the end")
    _require(c, "euler_at_final", False, "not implemented")
    if c["thresholding"]:
      raise _refuse("thresholding", True, "dynamic thresholding is not implemented")
    sample.update(sampler=_DPM[key], num_steps=25, eta=1.0 if key[0].startswith("sde") else 0.0)
  diffusion = {
    "process": "edm",
    "prediction": "edm",
    "sigma_min": float(c["sigma_min"]),
    "sigma_max": float(c["sigma_max"]),
    "sigma_data": float(c["sigma_data"]),
    "rho": float(c["rho"]),
  }
  return {"diffusion": diffusion, "sample": sample, "model": {"time_input": "c_noise"}}


def config_to_scheduler(config: Any) -> dict[str, Any]:
  """The diffusers ``scheduler_config.json`` of a jaxdiff config (its ``diffusion`` and ``sample``
  sections): see the module's table. ConfigError names the field diffusers cannot express."""
  d, s = config.diffusion, config.sample
  if d.process == "flow":
    return _flow_scheduler(config)
  if d.process == "edm":
    return _edm_scheduler(config)
  if d.process != "vp":
    raise ConfigError(
      f"config.diffusion.process={d.process!r} has no diffusers scheduler jaxdiff can write: the 'vp' chain "
      "exports as DDPM / DDIM / DPM-Solver, 'flow' as FlowMatchEulerDiscreteScheduler, 'edm' as "
      "EDMEulerScheduler / EDMDPMSolverMultistepScheduler"
    )
  names = {v: k for k, v in _SCHEDULES.items()}
  if d.schedule not in names:
    raise ConfigError(f"config.diffusion.schedule={d.schedule!r} has no diffusers beta_schedule")
  preds = {v: k for k, v in _PREDICTIONS.items()}
  if d.prediction not in preds:
    raise ConfigError(f"config.diffusion.prediction={d.prediction!r} has no diffusers prediction_type")
  dpm = {v: k for k, v in _DPM.items()}
  cls = (
    "DDPMScheduler"
    if s.sampler == "ddpm"
    else "DPMSolverMultistepScheduler"
    if s.sampler in dpm
    else "DDIMScheduler"
  )
  if d.schedule == "sigmoid" and cls != "DDPMScheduler":
    raise ConfigError(
      "config.diffusion.schedule='sigmoid' exists only in diffusers' DDPMScheduler, which needs "
      f"config.sample.sampler='ddpm' (got {s.sampler!r})"
    )
  if s.spacing not in _SPACINGS:
    raise ConfigError(f"config.sample.spacing={s.spacing!r} has no diffusers timestep_spacing")
  out = {
    "_class_name": cls,
    "_diffusers_version": DIFFUSERS_VERSION,
    "num_train_timesteps": int(d.num_timesteps),
    "beta_start": float(d.beta_start),
    "beta_end": float(d.beta_end),
    "beta_schedule": names[d.schedule],
    "trained_betas": None,
    "prediction_type": preds[d.prediction],
    "thresholding": False,
    "timestep_spacing": s.spacing,
    "steps_offset": 0,
    "rescale_betas_zero_snr": bool(d.rescale_zero_terminal_snr),
  }
  if cls == "DPMSolverMultistepScheduler":
    algorithm, order = dpm[s.sampler]
    if s.clip_x0:
      raise ConfigError("config.sample.clip_x0 has no DPMSolverMultistepScheduler counterpart; set it to 0")
    out.update(algorithm_type=algorithm, solver_order=order, solver_type="midpoint", lower_order_final=True,
               final_sigmas_type="zero", variance_type="learned_range" if config.model.learn_sigma else None)  # fmt: skip
    return out
  out.update(clip_sample=bool(s.clip_x0), clip_sample_range=float(s.clip_x0) if s.clip_x0 else 1.0)
  if cls == "DDPMScheduler":
    variance = "learned_range" if config.model.learn_sigma else "fixed_small"
    out["variance_type"] = variance
  else:
    out["set_alpha_to_one"] = True
  return out


def _flow_scheduler(config: Any) -> dict[str, Any]:
  d = config.diffusion
  if d.prediction != "flow":
    raise ConfigError(
      f"config.diffusion.prediction={d.prediction!r}: FlowMatchEulerDiscreteScheduler takes the velocity "
      "(prediction='flow')"
    )
  if config.model.get("time_input", "auto") not in ("auto", "unit"):
    raise ConfigError(
      f"config.model.time_input={config.model.time_input!r}: diffusers feeds a flow model 1000 t ('unit')"
    )
  return {
    "_class_name": "FlowMatchEulerDiscreteScheduler",
    "_diffusers_version": DIFFUSERS_VERSION,
    "num_train_timesteps": 1000,
    "shift": float(d.flow_shift),
    "use_dynamic_shifting": False,
  }


def _edm_scheduler(config: Any) -> dict[str, Any]:
  d, s = config.diffusion, config.sample
  if d.prediction != "edm":
    raise ConfigError(
      f"config.diffusion.prediction={d.prediction!r}: diffusers' EDM schedulers run EDM's preconditioned "
      "network (prediction='edm')"
    )
  time_input = config.model.get("time_input", "auto")
  if time_input != "c_noise":
    raise ConfigError(
      f"config.model.time_input={time_input!r}: diffusers' EDM schedulers feed the network c_noise = "
      "ln(sigma)/4 unscaled, and this network reads jaxdiff's 1000 ln(sigma)/4 ('log_sigma'); only networks "
      "trained or imported with model.time_input='c_noise' export"
    )
  grids = {v: k for k, v in _EDM_GRIDS.items()}
  if s.grid not in grids and s.grid != "karras":
    raise ConfigError(
      f"config.sample.grid={s.grid!r} has no diffusers EDM sigma_schedule: use '' or 'karras' (karras) or "
      "'logsnr' (exponential)"
    )
  if s.grid == "karras" and (s.rho != d.rho or s.sigma_min > 0 or s.sigma_max > 0):
    raise ConfigError(
      "config.sample.rho / sigma_min / sigma_max differ from config.diffusion's: diffusers' EDM schedulers "
      "have one rho and one sigma range; set them in config.diffusion"
    )
  if s.clip_x0:
    raise ConfigError("config.sample.clip_x0 has no counterpart in diffusers' EDM schedulers; set it to 0")
  dpm = {v: k for k, v in _DPM.items()}
  out = {
    "_class_name": "EDMDPMSolverMultistepScheduler" if s.sampler in dpm else "EDMEulerScheduler",
    "_diffusers_version": DIFFUSERS_VERSION,
    "sigma_min": float(d.sigma_min),
    "sigma_max": float(d.sigma_max),
    "sigma_data": float(d.sigma_data),
    "sigma_schedule": grids.get(s.grid, "karras"),
    "rho": float(d.rho),
    "num_train_timesteps": 1000,
    "prediction_type": "epsilon",
    "final_sigmas_type": "zero",
  }
  if s.sampler in dpm:
    algorithm, order = dpm[s.sampler]
    out.update(algorithm_type=algorithm, solver_order=order, solver_type="midpoint", lower_order_final=True,
               euler_at_final=False, thresholding=False)  # fmt: skip
  return out
