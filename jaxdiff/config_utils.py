"""Config checks and the objects a config describes (the schedule), shared by every tool.

Invalid values fail at start-up with a message that names the field and says what is allowed,
instead of an XLA trace minutes later.
"""

from __future__ import annotations

import ml_collections

from jaxdiff import schedules
from jaxdiff.samplers import SAMPLERS, SPACINGS

__all__ = ["ConfigError", "validate_config", "check_training_conditioning", "schedule_from_config"]


def load_config_file(path: str) -> ml_collections.ConfigDict:
  """`get_config()` of a config file loaded by path (configs/ is a folder of files, not a package)."""
  import importlib.util
  import pathlib

  path = pathlib.Path(path)
  if not path.exists():
    raise ConfigError(f"Config file {path} does not exist.")
  spec = importlib.util.spec_from_file_location(f"jaxdiff_config_{path.stem}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def sibling_config(config_file: str, name: str = "default") -> ml_collections.ConfigDict:
  """The config of `<name>.py` in the same folder as `config_file`: how configs build on each other."""
  import pathlib

  return load_config_file(str(pathlib.Path(config_file).with_name(f"{name}.py")))


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
  if (
    isinstance(value, bool)
    or not isinstance(value, (int, float))
    or (integer and not float(value).is_integer())
  ):
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
  if (
    config.model.num_classes
    and config.data.num_classes
    and config.model.num_classes != config.data.num_classes
  ):
    raise ConfigError(
      f"config.model.num_classes={config.model.num_classes} differs from "
      f"config.data.num_classes={config.data.num_classes}; set both to the data set's classes "
      "(or model.num_classes=0 for an unconditional model)."
    )
  if config.diffusion.rescale_zero_terminal_snr and config.diffusion.prediction == "eps":
    raise ConfigError(
      "config.diffusion.rescale_zero_terminal_snr=True needs prediction='v' (or 'x0'): "
      "eps cannot determine x0 where the SNR is zero."
    )
  steps = config.train.steps_per_dispatch
  for field in ("log_every", "checkpoint_every") + (("sample_every",) if config.train.sample_every else ()):
    if config.train[field] % steps:
      raise ConfigError(
        f"config.train.{field}={config.train[field]} must be a multiple of "
        f"config.train.steps_per_dispatch={steps}."
      )
  _validate_conditioning(config)
  every = config.eval.get("every", 0) if "eval" in config else 0
  if every and every % steps:
    raise ConfigError(
      f"config.eval.every={every} must be a multiple of config.train.steps_per_dispatch={steps}."
    )
  return config


def _field(config, path: str, default):
  """config.<path>, or default when an older config (e.g. a workdir's config.json) lacks it."""
  node = config
  for part in path.split("."):
    if part not in node:
      return default
    node = node[part]
  return node


def _validate_conditioning(config) -> None:
  """Cross-attention context, conditioning images and their data sources (fields added after the
  first configs were written: an older config without them means 'none')."""
  from jaxdiff.data.captions import VOCAB
  from jaxdiff.data.conditioning import COND_KINDS

  cond = _field(config, "data.cond", "")
  if cond not in COND_KINDS:
    raise ConfigError(f"config.data.cond={cond!r} is not valid; choose one of {list(COND_KINDS)}.")
  for path in ("model.context_dim", "model.context_vocab", "model.cond_channels"):
    value = _field(config, path, 0)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
      raise ConfigError(f"config.{path}={value!r} must be an integer >= 0.")
  null = _field(config, "model.context_null", "learned")
  if null not in ("learned", "zeros"):
    raise ConfigError(f"config.model.context_null={null!r} is not valid; choose 'learned' or 'zeros'.")
  p = _field(config, "train.context_dropout", -1.0)
  if isinstance(p, bool) or not isinstance(p, (int, float)) or p > 1:
    raise ConfigError(f"config.train.context_dropout={p!r} must be a number <= 1 (< 0: the label dropout).")
  context_dim, vocab = _field(config, "model.context_dim", 0), _field(config, "model.context_vocab", 0)
  cond_channels = _field(config, "model.cond_channels", 0)
  if (context_dim or cond_channels) and config.model.name != "unet":
    raise ConfigError("config.model.context_dim / cond_channels need config.model.name='unet'.")
  if vocab and not context_dim:
    raise ConfigError(
      f"config.model.context_vocab={vocab} needs config.model.context_dim > 0 (the token width)."
    )
  if cond == "caption" and (not context_dim or vocab < len(VOCAB)):
    raise ConfigError(
      f"config.data.cond='caption' yields int tokens 0..{len(VOCAB) - 1}: set "
      f"config.model.context_dim > 0 and config.model.context_vocab >= {len(VOCAB)}."
    )
  if cond == "sr" and cond_channels != config.data.channels:
    raise ConfigError(
      f"config.data.cond='sr' yields x_cond with the data's {config.data.channels} channel(s): set "
      f"config.model.cond_channels={config.data.channels} (now {cond_channels})."
    )


def check_training_conditioning(config) -> None:
  """The training data must carry what the network is conditioned on: a context needs
  config.data.cond='caption', a conditioning image config.data.cond='sr'."""
  cond = _field(config, "data.cond", "")
  if _field(config, "model.context_dim", 0) and cond != "caption":
    raise ConfigError(
      "config.model.context_dim > 0 but the training data carry no context: set "
      "config.data.cond='caption' (digits), or feed batches with a 'context' entry to "
      "jaxdiff.training.make_train_step yourself."
    )
  if _field(config, "model.cond_channels", 0) and cond != "sr":
    raise ConfigError(
      "config.model.cond_channels > 0 but the training data carry no conditioning image: set "
      "config.data.cond='sr', or feed batches with an 'x_cond' entry to "
      "jaxdiff.training.make_train_step yourself."
    )


def schedule_from_config(config: ml_collections.ConfigDict) -> schedules.Schedule:
  """The noise schedule `config.diffusion` describes."""
  d = config.diffusion
  s = schedules.get_schedule(d.schedule, int(d.num_timesteps), beta_start=d.beta_start, beta_end=d.beta_end)
  return schedules.rescale_zero_terminal_snr(s) if d.rescale_zero_terminal_snr else s
