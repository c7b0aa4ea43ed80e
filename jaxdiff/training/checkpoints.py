"""Orbax checkpoints of the train state: one wrapper around `ocp.CheckpointManager`.

Layout: `workdir/checkpoints/<step>/state` (Orbax, written to a temporary folder and renamed when
complete, so a crash never leaves a half-written step behind), `workdir/checkpoints/<step>/`
`jaxdiff_checksums.json` (the SHA-256 of every file of the step, written once the step is
complete and checked before it is restored: bit rot counts as damage) and `workdir/config.json`.
Restoring reads onto the current mesh, so a run may resume on a different number of devices.

A step that cannot be read, or whose checksums disagree, is damaged: restore falls back to the
next older one and a later save of the same step replaces it. A checkpoint whose optimizer state
has another structure than the config's optimizer is not damaged: its parameters, EMA and step
are restored with a fresh optimizer state (a warning names the changed fields). Fields that change
what the saved network means (process, prediction, noise schedule, model, data shape) must match
the run's config.json (`check_same_setup`). `WorkdirLock` keeps a second run off a workdir.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import logging
import os
import re
import socket
import sys
import threading
import time
from typing import Any

import jax
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp
from absl import logging as absl_logging

from jaxdiff import config_utils, fileio
from jaxdiff.errors import CheckpointError, WorkdirError
from jaxdiff.fileio import atomic_write_text
from jaxdiff.parallel import fetch

__all__ = [
  "CheckpointError",
  "Checkpointer",
  "checkpoint_dir",
  "WorkdirLock",
  "MANIFEST_NAME",
  "LOCK_NAME",
  "save_config",
  "load_config",
  "state_to_tree",
  "tree_to_state",
  "setup_fields",
  "optimizer_fields",
  "check_same_setup",
  "remove_if_empty",
]

log = logging.getLogger(__name__)

MANIFEST_NAME = "jaxdiff_checksums.json"  # in each step folder: {relative path: [size, sha256]}
LOCK_NAME = "train.lock"  # in the workdir while train.py runs: host, pid, start time; mtime = heartbeat

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


def state_to_tree(state) -> dict:
  """The parts of a TrainState worth saving (hyperparameters stay in the config)."""
  return {
    "step": state.step,
    "params": state.params,
    "opt_state": state.opt_state,
    "ema_params": state.ema_params,
  }


def tree_to_state(state, tree: dict):
  return state.replace(
    step=tree["step"], params=tree["params"], opt_state=tree["opt_state"], ema_params=tree["ema_params"]
  )


def _key_name(k: Any) -> str:
  for attr in ("key", "name", "idx"):
    if hasattr(k, attr):
      return str(getattr(k, attr))
  return str(k)


def _shapes(tree: Any, normalise: bool = False) -> dict[str, tuple]:
  """{path: shape} of the leaves; `normalise` spells paths the same for Orbax's metadata tree
  (dicts and lists) and the live tree (named tuples): '1/0/mu/dense/kernel'."""
  flat = jax.tree_util.tree_flatten_with_path(tree)[0]
  if normalise:
    return {"/".join(_key_name(k) for k in p): tuple(getattr(v, "shape", ())) for p, v in flat}
  return {jax.tree_util.keystr(p): tuple(getattr(v, "shape", ())) for p, v in flat}


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


def _differences(old: dict, new: dict, keys=None) -> list[str]:
  keys = sorted(set(old) & set(new)) if keys is None else keys
  return [f"{k}: {old[k]!r} -> {new[k]!r}" for k in keys if k in old and k in new and old[k] != new[k]]


def check_same_setup(
  saved: ml_collections.ConfigDict, config: ml_collections.ConfigDict, workdir: str
) -> None:
  """CheckpointError naming the fields that differ between a workdir's config.json (`saved`) and the
  config of a run resuming there, among those that change what the checkpoints mean."""
  old, new = setup_fields(saved), setup_fields(config)
  keys = ["diffusion.process"] + sorted(set(old) & set(new) - {"diffusion.process"})
  changed = [f"{k} {old[k]!r} there, {new[k]!r} now" for k in keys if old[k] != new[k]]
  if not changed:
    return
  raise CheckpointError(
    f"The checkpoints in {workdir} were trained with another set-up than the config gives: "
    + "; ".join(changed[:8])
    + (f" (and {len(changed) - 8} more)" if len(changed) > 8 else "")
    + ". These fields change what the saved network means, so resuming would train it (and sample.py "
    "would sample it) as something it is not. Drop those overrides to resume (the run's own settings are "
    f"in {os.path.join(workdir, 'config.json')}), or give a new --workdir."
  )


def _clean(text: str) -> str:
  lines = [ln for ln in str(text).strip().splitlines() if ln.strip()]
  line = lines[0] if lines else ""
  line = re.sub(r"\s*See full TensorStore details:.*$", "", line)
  line = re.sub(r"<bound method [^>]*>?", "", line).strip()
  return line[:300]


def _reason(e: BaseException) -> str:
  """One readable line for an exception: the innermost cause that says something (Orbax wraps
  TensorStore's error in one whose text is a repr of a C++ method)."""
  chain, x = [], e
  while x is not None and len(chain) < 10:
    chain.append(x)
    x = x.__cause__ or (None if x.__suppress_context__ else x.__context__)
  for x in reversed(chain):
    text = _clean(str(x))
    if text:
      return f"{type(x).__name__}: {text}"
  return type(e).__name__


_FULL = (  # (errno, how TensorStore's message says it, the words for it)
  (errno.ENOSPC, r"No space left|os_error_code='?28\b", "no space left on device"),
  (errno.EDQUOT, r"Disk quota|os_error_code='?122\b", "disk quota exceeded"),
  (errno.EFBIG, r"File too large|os_error_code='?27\b", "file size limit exceeded"),
)


def _disk_full(e: BaseException) -> str | None:
  """'no space left on device' (or quota, file size limit) when that is why `e` happened, else None."""
  x, seen = e, 0
  while x is not None and seen < 10:
    for num, pattern, words in _FULL:
      if (isinstance(x, OSError) and x.errno == num) or re.search(pattern, str(x)):
        return words
    x, seen = x.__cause__ or x.__context__, seen + 1
  return None


class _QuietOrbaxTraces(logging.Filter):
  """Orbax logs a failed background save with three tracebacks before raising it again in the
  main thread; `Checkpointer` reports it there in one line, so those records are dropped."""

  def filter(self, record: logging.LogRecord) -> bool:
    return not (record.levelno >= logging.ERROR and record.exc_info and "orbax" in record.pathname)


_QUIET = _QuietOrbaxTraces()


def _drop_closed_loop_callbacks(hook):
  """sys.unraisablehook that drops "Event loop is closed": after a failed save (a full disk),
  TensorStore's other pending writes finish into the event loop Orbax has closed, and each would
  print a trace of that; the failure itself is reported once, by `Checkpointer`."""

  def quiet(unraisable):
    if unraisable.exc_type is RuntimeError and str(unraisable.exc_value) == "Event loop is closed":
      return
    hook(unraisable)

  quiet.jaxdiff_quiet = True
  return quiet


def _file_digests(folder: str) -> dict[str, list]:
  """{relative path: [size, sha256 hex]} of every file under `folder` but the manifest."""
  out = {}
  for root, _, files in fileio.walk(folder):
    for name in sorted(files):
      rel = os.path.relpath(os.path.join(root, name), folder)
      if rel == MANIFEST_NAME or (name.startswith(".") and name.endswith(".tmp")):
        continue
      h = hashlib.sha256()
      with fileio.open(os.path.join(root, name), "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
          h.update(block)
      out[rel.replace(os.sep, "/")] = [fileio.getsize(os.path.join(root, name)), h.hexdigest()]
  return out


def _continue_schedule(opt_state: Any, step: int, accum: int) -> Any:
  """A fresh optimizer state whose learning-rate schedule (and MultiSteps' update counter) stands
  where a run with this optimizer would stand at `step`; Adam's own count stays 0 (its moments are
  new, so their bias correction restarts)."""
  updates = step // max(int(accum), 1)

  def like(a, v):
    if isinstance(a, jax.Array):
      return jax.device_put(np.asarray(v, a.dtype), a.sharding)
    return a

  def fix(x):
    if isinstance(x, optax.MultiStepsState):
      return x._replace(gradient_step=like(x.gradient_step, updates), inner_opt_state=walk(x.inner_opt_state))
    if isinstance(x, optax.ScaleByScheduleState):
      return x._replace(count=like(x.count, updates))
    return x

  def walk(t):
    return jax.tree_util.tree_map(
      fix, t, is_leaf=lambda x: isinstance(x, (optax.MultiStepsState, optax.ScaleByScheduleState))
    )

  return walk(opt_state)


# Where Orbax (etils.epath + TensorStore) writes: local paths and Google Cloud Storage.
ORBAX_URLS = ("gs://",)


def checkpoint_dir(
  workdir: str, config: ml_collections.ConfigDict | None = None, directory: str | None = None
) -> str:
  """Where a run's Orbax checkpoints live: `directory`, else config.train.checkpoint_dir, else
  WORKDIR/checkpoints. CheckpointError for a URL Orbax cannot write (it writes local paths and
  gs:// only; jaxdiff's other files go to any fsspec store)."""
  custom = directory or (str(config.train.get("checkpoint_dir", "") or "") if config is not None else "")
  path = fileio.abspath(custom) if custom else fileio.join(fileio.abspath(workdir), "checkpoints")
  if fileio.is_url(path) and not path.startswith(ORBAX_URLS):
    raise CheckpointError(
      f"Checkpoints cannot go to {path}: Orbax writes local paths and gs:// only. Keep the workdir "
      "there and set --config.train.checkpoint_dir to a local folder or a gs:// path."
    )
  return path


class Checkpointer:
  """Save / restore TrainStates in `workdir/checkpoints`, keeping the newest `keep`.

  `config`: the run's config (train.py passes it): recorded with each step's checksums (to name
  what changed when the optimizer differs on resume) and checked against config.json on restore.
  """

  def __init__(
    self,
    workdir: str,
    keep: int = 3,
    async_save: bool = True,
    config: ml_collections.ConfigDict | None = None,
    directory: str | None = None,
  ):
    self.workdir = fileio.abspath(workdir)
    self.directory = checkpoint_dir(self.workdir, config, directory)
    self.config = config
    self.damaged: dict[int, str] = {}  # steps restore found unreadable or corrupt: a save replaces them
    self._in_flight: int | None = None  # the step of the save not yet known to be complete
    self._async = async_save
    absl_logging.get_absl_logger().addFilter(_QUIET)
    if not getattr(sys.unraisablehook, "jaxdiff_quiet", False):
      sys.unraisablehook = _drop_closed_loop_callbacks(sys.unraisablehook)
    options = ocp.CheckpointManagerOptions(
      max_to_keep=max(int(keep), 1), create=True, enable_async_checkpointing=async_save
    )
    self.manager = ocp.CheckpointManager(
      self.directory, options=options, item_handlers={"state": ocp.StandardCheckpointHandler()}
    )

  def all_steps(self) -> list[int]:
    return sorted(self.manager.all_steps())

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def _step_dir(self, step: int) -> str:
    return os.path.join(self.directory, str(step))

  def save(self, state, force: bool = True) -> bool:
    """Start saving `state` (asynchronously); the previous save is completed (and its checksums
    written) first. A step that exists is kept unless restore found it damaged: then it is
    replaced. CheckpointError, with the incomplete files removed, when the write fails."""
    step = int(fetch(state.step))
    self._finish()
    if step in self.manager.all_steps():
      if step not in self.damaged:
        return False
      log.warning("Replacing damaged checkpoint %d (%s) with the redone step.", step, self.damaged.pop(step))
      self.manager.delete(step)
    try:
      saved = self.manager.save(
        step, args=ocp.args.Composite(state=ocp.args.StandardSave(state_to_tree(state))), force=force
      )
    except Exception as e:
      raise self._write_failed(step, e) from None
    if saved:
      self._in_flight = step
      if not self._async:
        self._finish()
    return bool(saved)

  def _finish(self) -> None:
    """Wait for the save in flight; write its checksums once it is complete."""
    step, self._in_flight = self._in_flight, None
    try:
      self.manager.wait_until_finished()
    except Exception as e:
      raise self._write_failed(step, e) from None
    if step is not None:
      self._seal(step)

  def _seal(self, step: int) -> None:
    if jax.process_index() != 0:
      return
    folder = self._step_dir(step)
    if not fileio.isdir(folder):
      return  # deleted already (keep=N)
    manifest = {"step": step, "algorithm": "sha256", "files": _file_digests(folder)}
    if self.config is not None:
      manifest["optimizer"] = optimizer_fields(self.config)
    try:
      atomic_write_text(os.path.join(folder, MANIFEST_NAME), json.dumps(manifest, indent=1, sort_keys=True))
    except OSError as e:
      if _disk_full(e):
        raise self._write_failed(step, e, complete=True) from None
      log.warning("Could not write the checksums of checkpoint %d (%s): it stays unverified.", step, e)

  def _remove_partial(self) -> None:
    if jax.process_index() != 0 or not fileio.isdir(self.directory):
      return
    for name in fileio.listdir(self.directory):
      if ".orbax-checkpoint-tmp" in name:
        fileio.rmtree(os.path.join(self.directory, name), ignore_errors=True)

  def _write_failed(self, step: int | None, e: BaseException, complete: bool = False) -> CheckpointError:
    """The one-line error of a failed save; the incomplete step's files are removed."""
    self._remove_partial()
    why = _disk_full(e) or _reason(e)
    steps = (
      sorted(int(n) for n in fileio.listdir(self.directory) if n.isdigit())
      if fileio.isdir(self.directory)
      else []
    )
    newest = [s for s in steps if complete or s != step]
    what = f"the checkpoint of step {step}" if step is not None else "a checkpoint"
    return CheckpointError(
      f"Could not write {what} to {self.directory}: {why}. "
      + (
        "Its data is complete but its checksums are not written. "
        if complete
        else "Nothing half-written is left; "
      )
      + (
        f"the newest complete checkpoint is step {newest[-1]}. "
        if newest
        else "no checkpoint is complete yet. "
      )
      + "Free space on that disk (or give a --workdir on a larger one) and rerun the same command: "
      + ("it resumes there." if newest else "it starts again.")
    )

  def reached_preemption(self, step: int) -> bool:
    try:
      return bool(self.manager.reached_preemption(step))
    except Exception:  # no preemption service (single process, CPU): the SIGTERM handler covers it
      return False

  def wait(self) -> None:
    self._finish()

  def close(self) -> None:
    try:
      self._finish()
    finally:
      try:
        self.manager.close()
      except Exception as e:  # a failed save was reported by _finish already
        log.debug("Orbax CheckpointManager.close: %s", _reason(e))

  def _metadata(self, step: int) -> dict | None:
    """Orbax's metadata tree of a step's state, or None when it cannot be read (damage)."""
    try:
      level = absl_logging.get_verbosity()
      absl_logging.set_verbosity(absl_logging.ERROR)  # orbax warns about items it was not asked to restore
      try:
        meta = self.manager.item_metadata(step)
      finally:
        absl_logging.set_verbosity(level)
      meta = meta["state"] if "state" in meta else meta
      meta = getattr(meta, "tree", meta)
      meta["params"]  # noqa: B018 (a damaged metadata file reads as an empty tree)
      return meta
    except Exception:
      return None

  def check_compatible(self, step: int, target_tree: dict) -> None:
    """Raise CheckpointError naming the parameters whose shapes differ from the config's model."""
    meta = self._metadata(step)
    if meta is None:
      return  # metadata unreadable: the restore itself will report the problem
    saved = _shapes(meta["params"])
    want = _shapes(target_tree["params"])
    if saved == want:
      return
    missing = sorted(set(want) - set(saved))
    extra = sorted(set(saved) - set(want))
    differ = [
      f"{k}: checkpoint {saved[k]} vs model {want[k]}"
      for k in sorted(set(saved) & set(want))
      if saved[k] != want[k]
    ]
    lines = (
      differ[:5]
      + [f"missing in checkpoint: {k}" for k in missing[:3]]
      + [f"not in model: {k}" for k in extra[:3]]
    )
    raise CheckpointError(
      f"The checkpoint at step {step} in {self.directory} was made for a different model than the config "
      f"describes ({len(differ)} shape differences, {len(missing)} missing, {len(extra)} unexpected "
      f"parameters):\n  "
      + "\n  ".join(lines)
      + "\nUse the config the run was trained with (workdir/config.json), or a new --workdir."
    )

  def verify(self, step: int) -> bool:
    """Check a step's files against its checksums: CheckpointError naming the first file that is
    missing or differs; False when the step has no checksums (written before they existed, or
    killed between completing the step and writing them), True when every file matches."""
    folder = self._step_dir(step)
    path = os.path.join(folder, MANIFEST_NAME)
    if not fileio.exists(path):
      return False
    try:
      with fileio.open(path) as f:
        files = json.load(f)["files"]
    except (OSError, ValueError, KeyError, TypeError) as e:
      raise CheckpointError(f"step {step}: its checksum file {MANIFEST_NAME} is unreadable ({e})") from None
    for rel, (size, digest) in sorted(files.items()):
      p = os.path.join(folder, rel)
      if not fileio.isfile(p):
        raise CheckpointError(f"step {step}: {rel} is missing")
      if fileio.getsize(p) != size:
        raise CheckpointError(
          f"step {step}: {rel} has {fileio.getsize(p)} bytes, {size} when saved (truncated?)"
        )
      h = hashlib.sha256()
      with fileio.open(p, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
          h.update(block)
      if h.hexdigest() != digest:
        raise CheckpointError(f"step {step}: content checksum mismatch in {rel} (bit rot or a bad copy)")
    return True

  def _saved_optimizer(self, step: int) -> dict | None:
    """The optimizer fields a step was saved with: its checksum file's record, else config.json's."""
    try:
      with fileio.open(os.path.join(self._step_dir(step), MANIFEST_NAME)) as f:
        return json.load(f)["optimizer"]
    except (OSError, ValueError, KeyError, TypeError):
      pass
    try:
      return optimizer_fields(load_config(self.workdir))
    except Exception:
      return None

  def _optimizer_change(self, step: int, target: dict) -> str | None:
    """None when the saved optimizer state has the structure of the target's (or the metadata is
    unreadable: then the restore itself decides); else what changed, in words."""
    meta = self._metadata(step)
    if meta is None or "opt_state" not in meta:
      return None
    saved, want = _shapes(meta["opt_state"], normalise=True), _shapes(target["opt_state"], normalise=True)
    if saved == want:
      return None
    old = self._saved_optimizer(step)
    changed = _differences(old, optimizer_fields(self.config)) if old and self.config is not None else []
    if changed:
      return "; ".join(changed)
    return f"the saved optimizer state has {len(saved)} arrays, the config's optimizer {len(want)}"

  def _restore_without_optimizer(self, step: int, abstract: dict, target: dict) -> dict:
    item = {k: abstract[k] for k in ("step", "params", "ema_params")}
    tree = ocp.PyTreeCheckpointer().restore(
      os.path.join(self._step_dir(step), "state"),
      args=ocp.args.PyTreeRestore(
        item=item, restore_args=ocp.checkpoint_utils.construct_restore_args(item), partial_restore=True
      ),
    )
    accum = int(self.config.train.grad_accum_steps) if self.config is not None else 1
    tree["opt_state"] = _continue_schedule(target["opt_state"], int(fetch(tree["step"])), accum)
    return tree

  def restore(self, target_state, step: int | None = None):
    """Restore into the structure and shardings of `target_state`.

    Without `step`, the newest checkpoint; if it cannot be read, or its checksums disagree, the
    previous ones are tried in turn, with a warning (and `save` later replaces the damaged ones).
    A checkpoint whose optimizer state has another structure (the optimizer changed) gives its
    parameters, EMA and step with the target's fresh optimizer state, and a warning. Returns
    (state, step) or (target_state, None) when there is no checkpoint.
    """
    steps = self.all_steps()
    if step is not None:
      if step not in steps:
        raise CheckpointError(f"No checkpoint for step {step} in {self.directory}; available: {steps}.")
      candidates = [step]
    else:
      candidates = steps[::-1]
    if not candidates:
      return target_state, None
    target = jax.tree_util.tree_map(
      lambda a: a if hasattr(a, "shape") else np.asarray(a), state_to_tree(target_state)
    )
    abstract = jax.tree_util.tree_map(
      lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=getattr(a, "sharding", None)), target
    )
    self.check_compatible(candidates[0], target)  # a different network: its parameters listed
    if self.config is not None and fileio.exists(os.path.join(self.workdir, "config.json")):
      try:
        saved = load_config(self.workdir)
      except (OSError, ValueError) as e:  # unreadable config.json: train.py writes it again
        log.warning("%s/config.json cannot be read (%s); the set-up is not compared.", self.workdir, e)
      else:
        check_same_setup(saved, self.config, self.workdir)
    errors = []
    for s in candidates:
      self.check_compatible(s, target)
      try:
        verified = self.verify(s)
        changed = self._optimizer_change(s, target)
        if changed is None:
          restored = self.manager.restore(
            s, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract))
          )
          tree = restored["state"]
        else:
          tree = self._restore_without_optimizer(s, abstract, target)
        _validate_finite(tree, s)
      except CheckpointError as e:
        errors.append(str(e))
      except Exception as e:  # corrupt files, truncated arrays, missing metadata
        errors.append(f"step {s}: {_reason(e)}")
      else:
        if errors:
          log.warning(
            "Resumed from step %d after skipping damaged checkpoint(s): %s. Training again replaces them "
            "as it reaches those steps.",
            s,
            "; ".join(errors),
          )
        if not verified:
          log.info("Checkpoint %d has no checksums (older, or interrupted before they were written).", s)
        if changed is not None:
          log.warning(
            "The optimizer changed since checkpoint %d (%s): its parameters, EMA and step are restored "
            "with a fresh optimizer state (Adam's moments restart from zero; the learning-rate schedule "
            "goes on from step %d).",
            s,
            changed,
            s,
          )
        return tree_to_state(target_state, tree), s
      self.damaged[s] = errors[-1]
      log.warning("Checkpoint %s is damaged (%s); trying an older one.", s, errors[-1])
    raise CheckpointError(
      f"No readable checkpoint in {self.directory}: "
      + " | ".join(errors)
      + "\nMove the damaged step folders aside or start from a new --workdir."
    )


def _validate_finite(tree: dict, step: int) -> None:
  leaves = jax.tree_util.tree_leaves(tree["params"])
  if not all(bool(np.all(np.isfinite(fetch(x)))) for x in leaves[:4]):
    raise CheckpointError(f"step {step}: parameters contain NaN/Inf")


class WorkdirLock:
  """`workdir/train.lock` while a training run writes there: one run per workdir.

  The file holds the host, pid and start time of the run; its modification time is a heartbeat
  (touched every `heartbeat_s`). The run also holds an flock on it, which the kernel drops when
  the process dies, however it dies. A lock is stale, and taken over, when its flock is free on
  this host (its process is gone) and, for a run on another host (a shared filesystem where
  flock may not reach), when its heartbeat is older than `stale_s`. Released (deleted) on exit.
  """

  def __init__(self, workdir: str, heartbeat_s: float = 30.0, stale_s: float = 600.0):
    self.workdir = fileio.abspath(workdir)
    self.path = os.path.join(self.workdir, LOCK_NAME)
    self.heartbeat_s, self.stale_s = float(heartbeat_s), float(stale_s)
    self.host = socket.gethostname()
    self._fd: int | None = None
    self._store: fileio.StoreLock | None = None  # on object stores (no flock there)
    self._stop = threading.Event()
    self._thread: threading.Thread | None = None

  @staticmethod
  def _read(fd: int) -> dict:
    try:
      os.lseek(fd, 0, os.SEEK_SET)
      return json.loads(os.read(fd, 65536).decode() or "{}")
    except (OSError, ValueError):
      return {}

  def _busy(self, holder: dict, age: float) -> WorkdirError:
    return WorkdirError(
      f"{self.workdir} is in use by another training run: host {holder.get('host', '?')}, pid "
      f"{holder.get('pid', '?')}, started {holder.get('started', '?')} (lock {self.path}, heartbeat "
      f"{age:.0f}s ago). Two runs on one workdir would interleave checkpoints and metrics. Wait for it to "
      "finish or stop it, or use another --workdir. A lock whose process is gone does not block on its "
      f"own host, and after {self.stale_s / 60:.0f} minutes without a heartbeat on any other."
    )

  def acquire(self) -> WorkdirLock:
    """Take the lock; WorkdirError naming the holder when another live run has it."""
    if fileio.is_url(self.path):
      return self._acquire_store()
    for _ in range(5):
      fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
      flocked = True
      try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
      except OSError as e:
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
          holder, age = self._read(fd), time.time() - os.fstat(fd).st_mtime
          os.close(fd)
          raise self._busy(holder, age) from None
        flocked = False  # no flock on this filesystem: the heartbeat decides
      try:
        same_file = os.fstat(fd).st_ino == os.stat(self.path).st_ino
      except FileNotFoundError:
        same_file = False
      if not same_file:  # released (deleted) by its holder between our open and flock: retry
        os.close(fd)
        continue
      holder = self._read(fd)
      age = time.time() - os.fstat(fd).st_mtime
      if holder and holder.get("pid") != os.getpid():
        if holder.get("host") == self.host:
          live = not flocked and fileio.pid_alive(int(holder.get("pid", 0)))
        else:
          live = age < self.stale_s
        if live:
          os.close(fd)
          raise self._busy(holder, age)
        log.warning(
          "Taking over the stale lock %s (host %s, pid %s).", self.path, holder.get("host"), holder.get("pid")
        )
      info = {"host": self.host, "pid": os.getpid(), "started": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
      os.ftruncate(fd, 0)
      os.lseek(fd, 0, os.SEEK_SET)
      os.write(fd, (json.dumps(info) + "\n").encode())
      os.fsync(fd)
      self._fd = fd
      self._stop.clear()
      self._thread = threading.Thread(target=self._beat, name="jaxdiff-workdir-lock", daemon=True)
      self._thread.start()
      return self
    raise WorkdirError(
      f"Could not take the lock {self.path}: it keeps changing. Is another run starting there?"
    )

  def _acquire_store(self) -> WorkdirLock:
    """A workdir on an object store: a heartbeat lock object (`fileio.StoreLock`) instead of flock."""
    store = fileio.StoreLock(self.path, self.heartbeat_s, self.stale_s)
    info = {"host": self.host, "pid": os.getpid(), "started": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
    try:
      self._store = store.acquire(info)
    except fileio.LockBusy as e:
      raise self._busy(e.holder, e.age) from None
    return self

  def _beat(self) -> None:
    while not self._stop.wait(self.heartbeat_s):
      try:
        os.utime(self.path)
      except OSError:
        pass

  def release(self) -> None:
    """Delete the lock file and drop the flock (safe to call twice)."""
    store, self._store = self._store, None
    if store is not None:
      store.release()
      return
    fd, self._fd = self._fd, None
    if fd is None:
      return
    self._stop.set()
    if self._thread is not None:
      self._thread.join(timeout=5)
    try:
      if os.fstat(fd).st_ino == os.stat(self.path).st_ino:
        os.remove(self.path)
    except OSError:
      pass
    os.close(fd)

  def __enter__(self) -> WorkdirLock:
    return self.acquire()

  def __exit__(self, *exc) -> None:
    self.release()


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
  """workdir/config.json, written atomically (the config a run was trained with)."""
  return atomic_write_text(
    os.path.join(workdir, "config.json"), config.to_json_best_effort(indent=2, sort_keys=True)
  )


def load_config(workdir: str) -> ml_collections.ConfigDict:
  """The config saved by train.py in workdir/config.json, overlaid on the package defaults
  (`config_utils.from_json`: lists come back as tuples; an older run's missing fields are noted)."""
  path = os.path.join(workdir, "config.json")
  if not fileio.exists(path):
    raise CheckpointError(
      f"{path} not found: {workdir} is not a jaxdiff training workdir "
      "(train.py writes config.json there when it starts)."
    )
  with fileio.open(path) as f:
    return config_utils.from_json(json.load(f), source=path)
