"""What a training run records about itself: `workdir/config.json`, the set-up and optimizer fields
that change what a checkpoint means, the run record (`workdir/train_run.json`: the run's id, its
checkpoint folder and the compiler options it compiled with) and the owner record a run leaves in a
checkpoint folder outside its workdir.

A resumed or repeated run reads these back, so it is the same run: the same checkpoint folder, the
same compiled numerics, the same set-up.
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from typing import Any

import jax
import jaxlib
import ml_collections

from jaxdiff import config_utils, fileio, perf
from jaxdiff.errors import CheckpointError, ConfigError
from jaxdiff.fileio import atomic_write_text

__all__ = [
  "CONFIG_NAME",
  "RUN_RECORD_NAME",
  "OWNER_NAME",
  "save_config",
  "load_config",
  "setup_fields",
  "optimizer_fields",
  "json_values",
  "setup_differences",
  "check_same_setup",
  "remove_if_empty",
  "read_run_record",
  "run_compiler_options",
  "write_run_record",
  "claim_checkpoint_dir",
]

log = logging.getLogger(__name__)

CONFIG_NAME = "config.json"
RUN_RECORD_NAME = "train_run.json"  # in the workdir: run id, checkpoint folder, compiler options
OWNER_NAME = "jaxdiff_owner.json"  # in a checkpoint folder outside its workdir: the owning run

# Model fields that change how the network runs, not what it computes: free to change on resume.
_RUNTIME_MODEL_FIELDS = frozenset({"dropout", "remat", "attention_impl", "dtype"})
# The diffusion fields that define each process's noise levels (what the network's input and
# output mean at a given time); the loss, its weighting and the sampling grids may change.
_PROCESS_FIELDS = {
  "vp": ("schedule", "num_timesteps", "beta_start", "beta_end", "rescale_zero_terminal_snr"),
  "vpsde": ("vpsde_beta_min", "vpsde_beta_max"),
  "cosine": ("cosine_shift",),
  "edm": ("sigma_data",),
  "flow": (),
}


def _plain(v: Any) -> Any:
  return tuple(_plain(x) for x in v) if isinstance(v, (list, tuple)) else v


def setup_fields(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """The config fields that change what a checkpoint means: the process and its noise levels,
  the prediction, the model (all but how it runs: dropout, remat, attention_impl, dtype) and the
  data's shape and conditioning."""
  d = config.diffusion
  out: dict[str, Any] = {"diffusion.process": d.process, "diffusion.prediction": d.prediction}
  for name in _PROCESS_FIELDS.get(d.process, ()):
    out[f"diffusion.{name}"] = d[name]
  if d.prediction == "edm":
    out["diffusion.sigma_data"] = d.sigma_data
  for name, value in config.model.items():
    if name not in _RUNTIME_MODEL_FIELDS:
      out[f"model.{name}"] = _plain(value)
  for name in ("image_size", "channels", "cond"):
    out[f"data.{name}"] = config.data[name]
  if config.data.cond == "sr":
    out["data.sr_factor"] = config.data.sr_factor
  return out


def optimizer_fields(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """The config fields the optimizer (and so its saved state) is built from."""
  out = {f"optim.{k}": _plain(v) for k, v in config.optim.items()}
  out["train.grad_accum_steps"] = config.train.grad_accum_steps
  return out


def json_values(fields: dict[str, Any]) -> dict[str, Any]:
  """`fields` as they read back from JSON (tuples as lists), so saved and live records compare."""
  return json.loads(json.dumps(fields, default=str))


def setup_differences(old: dict[str, Any], new: dict[str, Any]) -> list[tuple[str, Any, Any]]:
  """(field, old value, new value) for the set-up fields both records hold and that differ, the
  process first."""
  old, new = json_values(old), json_values(new)
  keys = ["diffusion.process"] + sorted(set(old) & set(new) - {"diffusion.process"})
  return [(k, old[k], new[k]) for k in keys if k in old and k in new and old[k] != new[k]]


def _listed(changed: list[str]) -> str:
  return "; ".join(changed[:8]) + (f" (and {len(changed) - 8} more)" if len(changed) > 8 else "")


def check_same_setup(
  saved: ml_collections.ConfigDict, config: ml_collections.ConfigDict, workdir: str
) -> None:
  """CheckpointError naming the fields that differ between a workdir's config.json (`saved`) and the
  config of a run resuming there, among those that change what the checkpoints mean."""
  changed = [
    f"{k} {a!r} there, {b!r} now" for k, a, b in setup_differences(setup_fields(saved), setup_fields(config))
  ]
  if not changed:
    return
  raise CheckpointError(
    f"The checkpoints in {workdir} were trained with another set-up than the config gives: "
    + _listed(changed)
    + ". These fields change what the saved network means, so resuming would train it (and sample.py "
    "would sample it) as something it is not. Drop those overrides to resume (the run's own settings are "
    f"in {os.path.join(workdir, CONFIG_NAME)}), or give a new --workdir."
  )


def remove_if_empty(folder: str) -> bool:
  """Delete `folder` if it holds no file at all (only empty folders): what a run that failed at
  start-up made. True if removed."""
  if not fileio.isdir(folder):
    return False
  for _, _, files in fileio.walk(folder):
    if files:
      return False
  fileio.rmtree(folder, ignore_errors=True)
  return True


def save_config(config: ml_collections.ConfigDict, workdir: str) -> str:
  """workdir/config.json, written atomically (the config a run was trained with), with
  `train.checkpoint_dir` resolved to an absolute path so the run finds its checkpoints from any
  working directory."""
  values = json.loads(config.to_json_best_effort())
  custom = str(values.get("train", {}).get("checkpoint_dir") or "")
  if custom:
    values["train"]["checkpoint_dir"] = fileio.abspath(custom)
  return atomic_write_text(os.path.join(workdir, CONFIG_NAME), json.dumps(values, indent=2, sort_keys=True))


def load_config(workdir: str) -> ml_collections.ConfigDict:
  """The config saved by train.py in workdir/config.json, overlaid on the package defaults
  (`config_utils.from_json`: lists come back as tuples; an older run's missing fields are noted).
  CheckpointError when there is none; ConfigError naming the file when it cannot be read or does
  not hold a config."""
  path = os.path.join(workdir, CONFIG_NAME)
  if not fileio.exists(path):
    raise CheckpointError(
      f"{path} not found: {workdir} is not a jaxdiff training workdir "
      "(train.py writes config.json there when it starts)."
    )
  try:
    with fileio.open(path) as f:
      values = json.load(f)
  except OSError as e:
    raise ConfigError(
      f"{path} cannot be read ({e.strerror or type(e).__name__}): make it a readable file (or give another "
      "--workdir)."
    ) from None
  except ValueError as e:  # invalid JSON or text
    raise ConfigError(
      f"{path} is not valid JSON ({e}): restore the run's config there (train.py writes it) or give --config."
    ) from None
  if not isinstance(values, dict):
    raise ConfigError(
      f"{path} holds a JSON {type(values).__name__}, not a config (a JSON object of sections): restore "
      "the run's config there (train.py writes it) or give --config."
    )
  return config_utils.from_json(values, source=path)


def _read_json(path: str) -> dict | None:
  """A JSON object file, or None when absent, unreadable or not an object (a warning says which)."""
  if not fileio.exists(path):
    return None
  try:
    with fileio.open(path) as f:
      data = json.load(f)
  except (OSError, ValueError) as e:
    log.warning("%s cannot be read (%s); it is written again.", path, e)
    return None
  return data if isinstance(data, dict) else None


def read_run_record(workdir: str) -> dict | None:
  """workdir/train_run.json ({run_id, checkpoint_dir, platform, compiler_options, ...}) or None."""
  return _read_json(os.path.join(workdir, RUN_RECORD_NAME))


def run_compiler_options(record: dict | None, platform: str | None = None) -> dict:
  """The compiler options of this run's programs: those its record names when it was compiled for
  the same platform (a resumed run compiles what it compiled before, whatever the environment now
  says), else `perf.cpu_compiler_options`."""
  platform = platform or jax.default_backend()
  now = perf.cpu_compiler_options(platform)
  if record and record.get("platform") == platform and isinstance(record.get("compiler_options"), dict):
    recorded = dict(record["compiler_options"])
    if recorded != now:
      log.warning(
        "Compiling with the options this run started with, %s (from %s), not %s: a resumed run keeps "
        "its numerics. Start a new --workdir to change them.",
        recorded,
        RUN_RECORD_NAME,
        now,
      )
    return recorded
  return now


def write_run_record(workdir: str, checkpoint_dir: str, options: dict, record: dict | None) -> dict:
  """Write workdir/train_run.json: the run's id (kept from `record`, else new), its checkpoint
  folder ("" for WORKDIR/checkpoints, which moves with the workdir), platform, compiler options and
  versions. Returns it."""
  out = dict(record or {})
  out.setdefault("run_id", uuid.uuid4().hex)
  inside = checkpoint_dir == fileio.join(fileio.abspath(workdir), "checkpoints")
  out.update(
    checkpoint_dir="" if inside else checkpoint_dir,
    platform=jax.default_backend(),
    compiler_options=dict(options),
    compiler_options_mode=perf.option_mode(),
    jax=jax.__version__,
    jaxlib=jaxlib.__version__,
  )
  atomic_write_text(os.path.join(workdir, RUN_RECORD_NAME), json.dumps(out, indent=1, sort_keys=True))
  return out


def _has_steps(folder: str) -> bool:
  return fileio.isdir(folder) and any(n.isdigit() for n in fileio.listdir(folder))


def claim_checkpoint_dir(workdir: str, directory: str, config: ml_collections.ConfigDict) -> dict | None:
  """Check that `directory` is the checkpoint folder of the run in `workdir` and claim it (process 0).

  CheckpointError when the workdir's config.json records another checkpoint folder that holds
  steps (an override dropped, or a relative path resolved from another directory), or when a
  folder outside the workdir holds the steps of another run (its owner record names another run
  id, or this workdir holds no run yet). Writes the owner record of a folder outside the workdir.
  Returns the run record (read or new, written)."""
  record = read_run_record(workdir)
  has_run = fileio.exists(os.path.join(workdir, CONFIG_NAME))
  recorded = _recorded_checkpoint_dir(workdir, record) if has_run else None
  if recorded is not None and recorded != directory and _has_steps(recorded):
    raise CheckpointError(
      f"The run in {workdir} keeps its checkpoints in {recorded}, but the config now names {directory} "
      f"(config.train.checkpoint_dir={str(config.train.get('checkpoint_dir', '') or '')!r}): resuming there "
      f"would start again at step 0 beside the run's steps. Pass --config.train.checkpoint_dir={recorded} "
      "(or leave --config out to use the run's config.json), or give a new --workdir."
    )
  inside = directory == fileio.join(fileio.abspath(workdir), "checkpoints")
  owner = None if inside else _read_json(os.path.join(directory, OWNER_NAME))
  if not inside and _has_steps(directory):
    mine = record is not None and owner is not None and owner.get("run_id") == record.get("run_id")
    adopt = owner is None and has_run  # steps of this run from before owner records
    if not (mine or adopt):
      who = f"the run in {owner.get('workdir', '?')}" if owner else "another run"
      raise CheckpointError(
        f"The checkpoint folder {directory} holds the steps of {who}, not of the run in {workdir}: two "
        "runs in one checkpoint folder would resume and overwrite each other's weights. Give this run "
        "its own --config.train.checkpoint_dir (or resume that run from its own workdir)."
      )
  return record


def _recorded_checkpoint_dir(workdir: str, record: dict | None) -> str | None:
  """The checkpoint folder the run in `workdir` used: its run record's, else its config.json's
  (a relative path there is read as the run read it, from the current directory)."""
  default = fileio.join(fileio.abspath(workdir), "checkpoints")
  if record and isinstance(record.get("checkpoint_dir"), str):
    return record["checkpoint_dir"] or default
  try:
    with fileio.open(os.path.join(workdir, CONFIG_NAME)) as f:
      custom = str((json.load(f).get("train") or {}).get("checkpoint_dir") or "")
  except (OSError, ValueError, AttributeError):
    return None
  return fileio.abspath(custom) if custom else default


def write_owner(directory: str, workdir: str, run_id: str) -> None:
  """The owner record of a checkpoint folder outside its workdir: which run's steps it holds."""
  fileio.makedirs(directory, exist_ok=True)
  atomic_write_text(
    os.path.join(directory, OWNER_NAME), json.dumps({"run_id": run_id, "workdir": fileio.abspath(workdir)})
  )
