"""Config checks and the objects a config describes (the schedule), shared by every tool.

Invalid values fail at start-up with a message that names the field and says what is allowed,
instead of an XLA trace minutes later.
"""

from __future__ import annotations

import ml_collections

from jaxdiff import schedules
from jaxdiff.samplers import SAMPLERS, SPACINGS

__all__ = ["ConfigError", "validate_config", "schedule_from_config"]


class ConfigError(ValueError):
  """A config field with a value jaxdiff cannot use."""


def _choice(config, path: str, allowed) -> None:
  value = _get(config, path)
  if value not in allowed:
    raise ConfigError(f"config.{path}={value!r} is not valid; choose one of {list(allowed)}.")


def _get(config, path: str):
  node = config
  for part in path.split("."):
    if part not in node:
      raise ConfigError(f"config.{path} is missing; start your config from configs/default.py.")
    node = node[part]
  return node


def _number(config, path: str, lo=None, hi=None, integer: bool = False, lo_open: bool = False) -> None:
  value = _get(config, path)
  if isinstance(value, bool) or not isinstance(value, (int, float)) or (integer and not float(value).is_integer()):
    kind = "an integer" if integer else "a number"
    raise ConfigError(f"config.{path}={value!r} must be {kind}.")
  if lo is not None and (value <= lo if lo_open else value < lo):
    raise ConfigError(f"config.{path}={value!r} must be {'>' if lo_open else '>='} {lo}.")
  if hi is not None and value > hi:
    raise ConfigError(f"config.{path}={value!r} must be <= {hi}.")


def validate_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Check every field the library reads; raise ConfigError naming the first bad one."""
  _choice(config, "model.name", ("unet", "mlp"))
  _choice(config, "diffusion.schedule", ("linear", "cosine", "sigmoid", "quadratic"))
  _number(config, "diffusion.num_timesteps", 1, integer=True)
  _number(config, "diffusion.beta_start", 0, 1, lo_open=True)
  _number(config, "diffusion.beta_end", 0, 1, lo_open=True)
  _choice(config, "diffusion.prediction", ("eps", "x0", "v"))
  _choice(config, "diffusion.loss_type", ("l2", "l1", "huber"))
  _choice(config, "diffusion.weighting", ("none", "p2", "min_snr"))
  _number(config, "diffusion.offset_noise", 0)
  _number(config, "train.batch_size", 1, integer=True)
  _number(config, "train.num_steps", 0, integer=True)
  _number(config, "train.log_every", 1, integer=True)
  _number(config, "train.checkpoint_every", 1, integer=True)
  _number(config, "train.keep_checkpoints", 1, integer=True)
  _number(config, "train.sample_every", 0, integer=True)
  _number(config, "train.num_sample_images", 1, integer=True)
  _number(config, "train.label_dropout", 0, 1)
  _number(config, "train.steps_per_dispatch", 1, integer=True)
  _number(config, "train.grad_accum_steps", 1, integer=True)
  _choice(config, "train.nan_policy", ("stop", "skip"))
  _choice(config, "optim.optimizer", ("adam", "adamw"))
  _choice(config, "optim.schedule", ("constant", "cosine"))
  _number(config, "optim.learning_rate", 0, lo_open=True)
  _number(config, "optim.warmup_steps", 0, integer=True)
  _number(config, "optim.grad_clip", 0)
  _number(config, "ema.decay", 0, 1)
  _choice(config, "sample.sampler", SAMPLERS)
  _choice(config, "sample.spacing", SPACINGS)
  _number(config, "sample.num_steps", 1, config.diffusion.num_timesteps, integer=True)
  _number(config, "sample.eta", 0)
  _number(config, "model.num_classes", 0, integer=True)
  if config.model.num_classes and config.data.num_classes and config.model.num_classes != config.data.num_classes:
    raise ConfigError(f"config.model.num_classes={config.model.num_classes} differs from "
                      f"config.data.num_classes={config.data.num_classes}; set both to the data set's classes "
                      "(or model.num_classes=0 for an unconditional model).")
  if config.diffusion.rescale_zero_terminal_snr and config.diffusion.prediction == "eps":
    raise ConfigError("config.diffusion.rescale_zero_terminal_snr=True needs prediction='v' (or 'x0'): "
                      "eps cannot determine x0 where the SNR is zero.")
  steps = config.train.steps_per_dispatch
  for field in ("log_every", "checkpoint_every") + (("sample_every",) if config.train.sample_every else ()):
    if config.train[field] % steps:
      raise ConfigError(f"config.train.{field}={config.train[field]} must be a multiple of "
                        f"config.train.steps_per_dispatch={steps}.")
  every = config.eval.get("every", 0) if "eval" in config else 0
  if every and every % steps:
    raise ConfigError(f"config.eval.every={every} must be a multiple of config.train.steps_per_dispatch={steps}.")
  return config


def schedule_from_config(config: ml_collections.ConfigDict) -> schedules.Schedule:
  """The noise schedule `config.diffusion` describes."""
  d = config.diffusion
  s = schedules.get_schedule(d.schedule, int(d.num_timesteps), beta_start=d.beta_start, beta_end=d.beta_end)
  return schedules.rescale_zero_terminal_snr(s) if d.rescale_zero_terminal_snr else s
