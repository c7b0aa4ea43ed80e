"""The few_step / distill config sections: their checks and the `jaxdiff.loss` arguments they make."""

from __future__ import annotations

from typing import Any

from jaxdiff.few_step.consistency import consistency_delta
from jaxdiff.few_step.meanflow import VELOCITIES

__all__ = ["method_of", "check_config", "loss_arguments", "DISTILL_SAMPLERS"]

METHOD_NAMES = ("", "meanflow", "shortcut", "consistency")
DISTILL_SAMPLERS = ("euler", "heun", "ddim", "dpmpp_2m")


def method_of(config: Any) -> str | None:
  """The run's one-step method ("meanflow" for prediction "mean_velocity" without one), or None."""
  method = config.few_step.method
  if not method and config.diffusion.prediction == "mean_velocity":
    return "meanflow"
  return method or None


def check_config(config: Any) -> str | None:
  """An error message naming the first few_step / distill field that cannot work, or None."""
  fs, method = config.few_step, config.few_step.method
  if method not in METHOD_NAMES:
    return f"config.few_step.method must be one of {METHOD_NAMES}, got {method!r}."
  method = method_of(config)
  if method in ("meanflow", "shortcut"):
    if config.diffusion.prediction != "mean_velocity":
      return f"config.few_step.method={method!r} needs config.diffusion.prediction='mean_velocity'."
    if config.diffusion.process != "flow":
      return f"config.few_step.method={method!r} runs on rectified flow: set config.diffusion.process='flow'."
    if not config.model.second_time:
      return f"config.few_step.method={method!r} needs a two-time network: set config.model.second_time=True."
  elif config.diffusion.prediction == "mean_velocity":
    return (
      "config.diffusion.prediction='mean_velocity' is trained by few_step.method 'meanflow' or 'shortcut'."
    )
  if fs.velocity not in VELOCITIES:
    return f"config.few_step.velocity must be one of {VELOCITIES}, got {fs.velocity!r}."
  for field, lo, hi in (("ratio", 0, 1), ("fraction", 0, 1), ("delta_start", 0, 1), ("delta_end", 0, 1)):
    if not lo < float(fs[field]) <= hi and not (field in ("ratio", "fraction") and fs[field] == 0):
      return f"config.few_step.{field} must be in ({lo}, {hi}], got {fs[field]!r}."
  if int(fs.max_log2) < 1:
    return f"config.few_step.max_log2 must be an integer >= 1, got {fs.max_log2!r}."
  teacher = config.distill.teacher
  if teacher and method != "consistency":
    return "config.distill.teacher distils a consistency model: set config.few_step.method='consistency'."
  if teacher and config.distill.sampler not in DISTILL_SAMPLERS:
    return f"config.distill.sampler must be one of {DISTILL_SAMPLERS}, got {config.distill.sampler!r}."
  return None


def loss_arguments(config: Any, step, uncond: dict | None = None) -> dict[str, Any]:
  """`few_step` and `few_step_options` of `jaxdiff.loss` for this config at training `step`
  (empty for a plain diffusion run); `uncond` feeds MeanFlow's folded guidance."""
  method = method_of(config)
  if method is None:
    return {}
  fs = config.few_step
  if method == "meanflow":
    opts = dict(
      ratio=float(fs.ratio), logit_mean=float(fs.logit_mean), logit_std=float(fs.logit_std),
      adaptive_p=float(fs.adaptive_p), adaptive_c=float(fs.adaptive_c), velocity=str(fs.velocity),
      omega=float(fs.omega), kappa=float(fs.kappa),
    )  # fmt: skip
    if uncond and (opts["omega"] != 1.0 or opts["kappa"] != 0.0):
      opts["uncond"] = uncond
  elif method == "shortcut":
    opts = dict(fraction=float(fs.fraction), max_log2=int(fs.max_log2))
  else:
    delta = consistency_delta(step, int(config.train.num_steps), float(fs.delta_start), float(fs.delta_end))
    opts = dict(delta=delta, huber_c=float(fs.huber_c))
  return {"few_step": method, "few_step_options": opts}
