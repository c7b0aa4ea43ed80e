"""Config checks and the objects a config describes (the schedule), shared by every tool.

Invalid values fail at start-up with a message that names the field and says what is allowed,
instead of an XLA trace minutes later.
"""

from __future__ import annotations

import difflib
import importlib.util
import os
import pathlib
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import ml_collections
from absl import flags

from jaxdiff import config_sampling, diffusion, grids, models, processes, samplers, schedules
from jaxdiff.conditioning import Conditioning
from jaxdiff.configs import default, with_defaults
from jaxdiff.data import derived_inputs
from jaxdiff.errors import ConfigError
from jaxdiff.few_step import config as few_step_config

__all__ = [
  "ConfigError",
  "with_defaults",
  "from_json",
  "load_config_file",
  "parse_flags",
  "config_flag_error",
  "validate_config",
  "check_training_conditioning",
  "schedule_from_config",
  "process_from_config",
  "PROCESS_NAMES",
  "GRIDS",
]

NAN_POLICIES = ("stop", "skip")
OPTIMIZERS = ("adam", "adamw")
LR_SCHEDULES = ("constant", "cosine")


def load_config_file(path: str) -> ml_collections.ConfigDict:
  """`get_config()` of a config file loaded by path, as `--config=<file>` loads it; ConfigError for a
  missing file, one that fails to run, or one without get_config()."""
  path = pathlib.Path(path)
  if not path.is_file():
    raise ConfigError(_missing_config_message(str(path)))
  spec = importlib.util.spec_from_file_location(f"jaxdiff_config_{path.stem}", path)
  module = importlib.util.module_from_spec(spec)
  try:
    spec.loader.exec_module(module)
  except Exception as e:  # the user's file: a syntax error, a failing import, ...
    raise ConfigError(f"Config file {path} fails to load: {type(e).__name__}: {_first_line(e)}") from None
  if not callable(getattr(module, "get_config", None)):
    raise ConfigError(_no_get_config_message(str(path)))
  return module.get_config()


def _first_line(e: BaseException) -> str:
  text = str(e).strip()
  if len(text) > 1 and text[0] == text[-1] and text[0] in "'\"":  # a KeyError's repr
    text = text[1:-1]
  return text.splitlines()[0] if text else type(e).__name__


def _missing_config_message(path: str) -> str:
  here = pathlib.Path("configs")
  names = sorted(p.name for p in here.glob("*.py")) if here.is_dir() else []
  known = f" (configs/ holds {', '.join(names[:8])}{', ...' if len(names) > 8 else ''})" if names else ""
  return f"Config file {path} does not exist{known}; pass --config=<path of a .py file with get_config()>."


def _no_get_config_message(path: str) -> str:
  return (
    f"Config file {path} has no get_config(); a config file defines get_config() returning an "
    "ml_collections.ConfigDict (see configs/digits.py)."
  )


def _unknown_override(config: ml_collections.ConfigDict, dotted: str) -> str | None:
  """The message for `--config.<dotted>` when it names no field of `config`, else None."""
  node, done = config, []
  for part in dotted.split("."):
    keys = list(node.keys()) if isinstance(node, (ml_collections.ConfigDict, Mapping)) else []
    if part not in keys:
      near = difflib.get_close_matches(part, keys, n=1)
      rest = dotted.split(".")[len(done) + 1 :]
      hint = f"; did you mean --config.{'.'.join(done + [near[0]] + rest)}?" if near else ""
      if keys:
        what = f"config.{'.'.join(done + [part])} is not a {'section' if rest else 'field'} jaxdiff reads"
      else:
        what = f"config.{'.'.join(done)} is a value, not a section"
      return f"--config.{dotted}: {what}{hint} (every field is listed in jaxdiff/configs/default.py)"
    node = node[part]
    done.append(part)
  return None


def config_flag_error(error: BaseException, argv: Sequence[str], flag: str = "config") -> str:
  """A one-line message for an exception raised while absl parsed `--<flag>=FILE` and its
  `--<flag>.field=value` overrides (ml_collections raises plain errors with a long trace)."""
  path = next((a.split("=", 1)[1] for a in argv if a.startswith(f"--{flag}=")), None)
  if path is not None:
    file = path.split(":", 1)[0]  # config_flags' FILE:ARGUMENT form
    if not os.path.isfile(file):
      return _missing_config_message(file)
    try:
      config = load_config_file(file)
    except ConfigError as e:
      return str(e)
    except Exception as e:  # get_config() itself failed
      return f"Config file {file}: get_config() fails: {type(e).__name__}: {_first_line(e)}"
    for arg in argv:
      if arg.startswith(f"--{flag}."):
        dotted = arg[len(flag) + 3 :].split("=", 1)[0]
        message = _unknown_override(config, dotted)
        if message:
          return message
  return f"--{flag}: {type(error).__name__}: {_first_line(error)}"


def _check_guidance(config: ml_collections.ConfigDict) -> None:
  """config.sample.guidance_rescale / guidance_interval / guidance_schedule, checked at start-up
  (training's periodic grids use them too)."""
  s = config.sample
  _number(config, "sample.guidance_rescale", 0, 1)
  try:
    config_sampling.parse_guidance_interval(s.guidance_interval)
    config_sampling.parse_guidance_schedule(s.guidance_schedule, s.num_steps)
  except (TypeError, ValueError) as e:
    raise ConfigError(f"config.sample.{e}") from None


def parse_flags(argv: Sequence[str]) -> list[str]:
  """absl's flag parsing for a CLI with a config flag (`app.run(main, flags_parser=parse_flags)`):
  a missing config file, one without get_config(), an unknown --config.<field> or a bad flag value
  prints one line naming the problem and the fix and exits with status 2, instead of a trace."""
  prog = os.path.basename(argv[0]) if argv else "jaxdiff"
  try:
    rest = flags.FLAGS(list(argv))
    failed = _failed_config_load()  # ml_collections defers a file that fails to load to first use
    if failed is None:
      return rest
    message = config_flag_error(failed, argv)
  except flags.Error as e:  # absl's own: an unknown flag, a value of the wrong type, a missing flag
    message = f"{_first_line(e)} (--help lists the flags)"
    if any(a.startswith("--config.") for a in argv) and not any(
      a == "--config" or a.startswith("--config=") for a in argv
    ):
      message = (
        "--config.<field>=... overrides need a config file to override: pass --config=configs/<name>.py "
        "(or WORKDIR/config.py) as well; without --config a workdir's config.json is used as saved"
      )
  except Exception as e:  # raised by ml_collections while loading the config file or an override
    message = config_flag_error(e, argv)
  print(f"{prog}: error: {message}", file=sys.stderr)
  sys.exit(2)


def _failed_config_load() -> BaseException | None:
  """The load error ml_collections keeps in a config flag whose file failed to load (it raises it
  only when the config is first read, deep inside the program)."""
  for name in ("config",):
    if name in flags.FLAGS and flags.FLAGS[name].value is not None:
      value = flags.FLAGS[name].value
      if type(value).__name__ == "_ErrorConfig":
        return object.__getattribute__(value, "_error")
  return None


def sibling_config(config_file: str, name: str = "default") -> ml_collections.ConfigDict:
  """The config of `<name>.py` in the same folder as `config_file` (for user config folders; the
  repository's configs import `jaxdiff.configs` instead)."""
  return load_config_file(str(pathlib.Path(config_file).with_name(f"{name}.py")))


def _tuplify(obj: Any) -> Any:
  if isinstance(obj, Mapping):
    return {k: _tuplify(v) for k, v in obj.items()}
  if isinstance(obj, list):
    return tuple(_tuplify(v) for v in obj)
  return obj


def from_json(values: Mapping, source: str = "config.json") -> ml_collections.ConfigDict:
  """A saved config (a workdir's config.json, parsed) overlaid on the package defaults, lists as
  tuples. Fields added to jaxdiff after it was written take their defaults, with a logged note
  naming them, so old workdirs resume and sample."""
  return with_defaults(_tuplify(values), note=source)


def _get(config, path: str):
  node = config
  for part in path.split("."):
    node = node[part]
  return node


def _choice(config, path: str, allowed) -> None:
  value = _get(config, path)
  if value not in allowed:
    raise ConfigError(f"config.{path}={value!r} is not valid; choose one of {list(allowed)}.")


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


def _check_fields(config, base, prefix: str = "") -> None:
  """Every field of the default config is present and no other: a misspelled field fails here
  instead of being silently ignored."""
  for key in config.keys():
    if key not in base:
      near = difflib.get_close_matches(key, list(base.keys()), n=1)
      hint = f"did you mean config.{prefix}{near[0]}? " if near else ""
      raise ConfigError(
        f"config.{prefix}{key} is not a field jaxdiff reads; {hint}"
        "(every field is listed in jaxdiff/configs/default.py)"
      )
  for key in base.keys():
    if key not in config:
      raise ConfigError(
        f"config.{prefix}{key} is missing; build your config on jaxdiff.configs.default "
        "(or complete it with jaxdiff.config_utils.with_defaults)."
      )
    if isinstance(base[key], ml_collections.ConfigDict):
      if not isinstance(config[key], (ml_collections.ConfigDict, Mapping)):
        raise ConfigError(f"config.{prefix}{key} must be a section (a ConfigDict), got {config[key]!r}.")
      _check_fields(config[key], base[key], f"{prefix}{key}.")


def _check_schedule(config) -> None:
  """The schedule's name is checked by its owner (jaxdiff.schedules), by building it."""
  try:
    schedule_from_config(config)
  except (ValueError, TypeError) as e:
    raise ConfigError(f"config.diffusion.schedule={config.diffusion.schedule!r}: {e}") from None


def validate_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Check every field the library reads; raise ConfigError naming the first bad one and the fix.
  The allowed choices come from the modules that own them (samplers, diffusion, schedules,
  models, data.conditioning)."""
  _check_fields(config, default.get_config())
  _choice(config, "diffusion.process", PROCESS_NAMES)  # before the model, whose time input follows it
  models.check_model_config(config)
  _number(config, "diffusion.num_timesteps", 1, integer=True)
  _number(config, "diffusion.beta_start", 0, 1, lo_open=True)
  _number(config, "diffusion.beta_end", 0, 1, lo_open=True)
  _choice(config, "diffusion.prediction", diffusion.PREDICTIONS)
  _choice(config, "diffusion.loss_type", diffusion.LOSS_TYPES)
  _choice(config, "diffusion.weighting", diffusion.WEIGHTINGS)
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
  _choice(config, "train.nan_policy", NAN_POLICIES)
  _number(config, "train.max_skipped_steps", 0, integer=True)
  _choice(config, "optim.optimizer", OPTIMIZERS)
  _choice(config, "optim.schedule", LR_SCHEDULES)
  _number(config, "optim.learning_rate", 0, lo_open=True)
  _number(config, "optim.warmup_steps", 0, integer=True)
  _number(config, "optim.grad_clip", 0)
  _number(config, "ema.decay", 0, 1)
  _choice(config, "sample.sampler", samplers.SAMPLERS)
  _choice(config, "sample.spacing", samplers.SPACINGS)
  _number(
    config, "sample.num_steps", 1,
    config.diffusion.num_timesteps if config.diffusion.process == "vp" else None, integer=True,
  )  # fmt: skip
  _choice(config, "sample.order", (1, 2, 3))
  _number(config, "sample.s_churn", 0)
  _validate_process(config)
  _number(config, "sample.eta", 0)
  _check_guidance(config)
  _check_schedule(config)
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
  every = ("log_every", "checkpoint_every") + (("sample_every",) if config.train.sample_every else ())
  for field in every:
    if config.train[field] % steps:
      raise ConfigError(
        f"config.train.{field}={config.train[field]} must be a multiple of "
        f"config.train.steps_per_dispatch={steps}."
      )
  _validate_conditioning(config)
  problem = few_step_config.check_config(config)  # one- and two-step models (jaxdiff.few_step)
  if problem:
    raise ConfigError(problem)
  if config.eval.every and config.eval.every % steps:
    raise ConfigError(
      f"config.eval.every={config.eval.every} must be a multiple of config.train.steps_per_dispatch={steps}."
    )
  return config


def _validate_conditioning(config) -> None:
  """Cross-attention context, conditioning images and their data sources."""
  _choice(config, "data.cond", derived_inputs.COND_KINDS)
  _number(config, "train.context_dropout", hi=1)
  Conditioning.from_config(config).validate(derived_inputs.provided_inputs(config.data))


def check_training_conditioning(config) -> None:
  """The training data must carry what the network is conditioned on: a context needs
  config.data.cond='caption', a conditioning image config.data.cond='sr'."""
  Conditioning.from_config(config).check_training_data(derived_inputs.provided_inputs(config.data))


PROCESS_NAMES = tuple(processes.PROCESSES)  # config.diffusion.process
GRIDS = ("", "karras", "logsnr", "uniform", "flow") + tuple(grids.SPACINGS)  # config.sample.grid


def process_from_config(config: ml_collections.ConfigDict):
  """The process `config.diffusion` describes: the `Schedule` for "vp" (the discrete chain, as
  before), else a `jaxdiff.processes` process with the config's fields."""
  d = config.diffusion
  if d.process == "vp":
    return schedule_from_config(config)
  if d.process == "vpsde":
    return processes.VPSDE(
      beta_min=float(d.vpsde_beta_min), beta_max=float(d.vpsde_beta_max), t_min=float(d.t_min)
    )
  if d.process == "cosine":
    return processes.CosineVP(shift=float(d.cosine_shift))
  if d.process == "edm":
    return processes.EDM(
      sigma_data=float(d.sigma_data), sigma_min=float(d.sigma_min), sigma_max=float(d.sigma_max),
      rho=float(d.rho), p_mean=float(d.p_mean), p_std=float(d.p_std),
    )  # fmt: skip
  if d.process == "flow":
    return processes.RectifiedFlow(
      shift=float(d.flow_shift), logit_mean=float(d.logit_mean), logit_std=float(d.logit_std)
    )
  raise ConfigError(f"config.diffusion.process must be one of {PROCESS_NAMES}, got {d.process!r}.")


def _validate_process(config) -> None:
  """The process, its fields, and the choices that must agree with it."""
  d, s = config.diffusion, config.sample
  _choice(config, "diffusion.process", PROCESS_NAMES)
  _choice(config, "sample.grid", GRIDS)
  if d.process == "vp":
    return
  for field, value in (
    ("model.learn_sigma", config.model.learn_sigma),
    ("diffusion.rescale_zero_terminal_snr", d.rescale_zero_terminal_snr),
  ):
    if value:
      raise ConfigError(
        f"config.{field}=True is defined for the discrete chain (diffusion.process='vp'), "
        f"not diffusion.process={d.process!r}; turn it off."
      )
  if s.grid in grids.SPACINGS:
    raise ConfigError(
      f"config.sample.grid={s.grid!r} is a spacing of discrete chains; for diffusion.process={d.process!r} "
      "use '' (the process's own), 'karras', 'logsnr', 'uniform' or 'flow'."
    )
  for field in (
    "sigma_data",
    "sigma_min",
    "sigma_max",
    "rho",
    "p_std",
    "vpsde_beta_min",
    "t_min",
    "logit_std",
  ):
    _number(config, f"diffusion.{field}", 0, lo_open=True)
  if d.sigma_min >= d.sigma_max:
    raise ConfigError(f"config.diffusion.sigma_min={d.sigma_min} must be below sigma_max={d.sigma_max}.")
  proc = process_from_config(config)
  try:  # the process owns its time distributions: ask it
    proc.sample_time(jax.random.key(0), 1, d.time_sampling or None)
  except ValueError as e:
    raise ConfigError(f"config.diffusion.time_sampling={d.time_sampling!r}: {e}") from None


def schedule_from_config(config: ml_collections.ConfigDict) -> schedules.Schedule:
  """The noise schedule `config.diffusion` describes."""
  d = config.diffusion
  s = schedules.get_schedule(d.schedule, int(d.num_timesteps), beta_start=d.beta_start, beta_end=d.beta_end)
  return schedules.rescale_zero_terminal_snr(s) if d.rescale_zero_terminal_snr else s
