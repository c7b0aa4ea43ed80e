"""Orbax checkpoints of the train state: one wrapper around `ocp.CheckpointManager`.

Layout: `<checkpoint folder>/<step>/state` (Orbax, written to a temporary folder and renamed when
complete, so a crash never leaves a half-written step behind), `<step>/layout` (how the state's
arrays are packed, see below) and `<step>/jaxdiff_checksums.json`
(`integrity`: the checksums of the step's files and the records of what it means, written once the
step is complete and checked before it is restored). The folder is WORKDIR/checkpoints unless
config.train.checkpoint_dir names another. Restoring reads onto the current mesh, so a run may
resume on a different number of devices.

A step that cannot be read, or whose checksums disagree, is damaged: restore falls back to the
next older one and a later save of the same step replaces it. A checkpoint whose optimizer state
has another structure than the config's optimizer is not damaged: its parameters, EMA and step
are restored with a fresh optimizer state (a warning names the changed fields). A step whose
recorded set-up (process, prediction, noise levels, model, data shape) differs from the config's
is refused, naming both (`run_records.setup_fields`).

A single-process save writes the state packed (`packing`: the small arrays as one vector per
dtype, with a layout); restore reads that and the one array per leaf that multi-process saves
(and older checkpoints) hold.
"""

from __future__ import annotations

import errno
import logging
import os
import re
from typing import Any

import jax
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp
from etils import epath

from jaxdiff import fileio
from jaxdiff.errors import CheckpointError
from jaxdiff.parallel import fetch
from jaxdiff.training import integrity, packing
from jaxdiff.training.run_records import (
  CONFIG_NAME,
  check_same_setup,
  json_values,
  load_config,
  optimizer_fields,
  setup_differences,
  setup_fields,
)

__all__ = ["Checkpointer", "checkpoint_dir", "state_to_tree", "tree_to_state", "ORBAX_URLS"]

log = logging.getLogger(__name__)


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


def _shapes(tree: Any) -> dict[str, tuple]:
  """{path: shape} of the leaves, paths spelt the same for Orbax's metadata tree (dicts and lists),
  a packed step's layout and the live tree (named tuples): '1/0/mu/dense/kernel'."""
  flat = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {packing.path_name(p): tuple(getattr(v, "shape", ())) for p, v in flat}


def _plain(v: Any) -> Any:
  return tuple(_plain(x) for x in v) if isinstance(v, (list, tuple)) else v


def _differences(old: dict, new: dict, keys=None) -> list[str]:
  keys = sorted(set(old) & set(new)) if keys is None else keys
  return [f"{k}: {old[k]!r} -> {new[k]!r}" for k in keys if k in old and k in new and old[k] != new[k]]


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

  `config`: the run's config (train.py passes it): its optimizer and set-up fields are recorded
  with each step's checksums, and on restore the step's recorded set-up is checked against it
  (without `config`, against the workdir's config.json).
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
    self.unverified: set[int] = set()  # steps restored without checksums, or saved without them
    self._in_flight: int | None = None  # the step of the save not yet known to be complete
    self._async = async_save
    self._packer: packing.Packer | None = None
    options = ocp.CheckpointManagerOptions(
      max_to_keep=max(int(keep), 1), create=True, enable_async_checkpointing=async_save
    )
    self.manager = ocp.CheckpointManager(
      self.directory,
      options=options,
      item_handlers={"state": ocp.StandardCheckpointHandler(), "layout": ocp.JsonCheckpointHandler()},
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
    tree = state_to_tree(state)
    if jax.process_count() == 1:  # packed (the vectors are whole on the host of the one process)
      if self._packer is None or not self._packer.fits(tree):
        self._packer = packing.Packer(tree)
      args = ocp.args.Composite(
        state=ocp.args.StandardSave(self._packer.item(tree)), layout=ocp.args.JsonSave(self._packer.layout)
      )
    else:  # each process writes its own shards of each array
      args = ocp.args.Composite(state=ocp.args.StandardSave(tree))
    try:
      saved = self.manager.save(step, args=args, force=force)
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
    records = {}
    if self.config is not None:
      records = {"optimizer": optimizer_fields(self.config), "setup": setup_fields(self.config)}
    try:
      integrity.write_manifest(folder, step, json_values(records))
    except OSError as e:
      if _disk_full(e):
        raise self._write_failed(step, e, complete=True) from None
      self.unverified.add(step)
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
      meta = ocp.StandardCheckpointHandler().metadata(epath.Path(os.path.join(self._step_dir(step), "state")))
      meta = getattr(meta, "tree", meta)
      meta["params"]  # noqa: B018 (a damaged metadata file reads as an empty tree)
      return meta
    except Exception:
      return None

  def _layout(self, step: int) -> dict | None:
    """The packing layout of a step (`_pack`), or None for a step of one array per leaf (saved by
    several processes, or before packing existed). CheckpointError when it cannot be read."""
    path = os.path.join(self._step_dir(step), "layout")
    if not fileio.exists(path):
      return None
    try:
      layout = self.manager.restore(step, args=ocp.args.Composite(layout=ocp.args.JsonRestore()))["layout"]
    except Exception as e:
      raise CheckpointError(f"step {step}: its packing layout cannot be read ({_reason(e)})") from None
    if (
      not isinstance(layout, dict)
      or layout.get("format") != packing.LAYOUT_FORMAT
      or not all(p in layout for p in packing.PARTS)
    ):
      raise CheckpointError(
        f"step {step}: its packing layout is not one this jaxdiff writes (format {packing.LAYOUT_FORMAT})"
      )
    return layout

  def _saved_shapes(self, step: int, part: str) -> dict[str, tuple] | None:
    """{path: shape} of a part of a step's state ('params', 'opt_state'), or None when the step's
    description cannot be read (then the restore itself reports the damage)."""
    try:
      layout = self._layout(step)
    except CheckpointError:
      return None
    if layout is not None:
      return {name: tuple(shape) for name, shape, *_ in layout[part]}
    meta = self._metadata(step)
    if meta is None or part not in meta:
      return None
    return _shapes(meta[part])

  def check_compatible(self, step: int, target_tree: dict) -> None:
    """Raise CheckpointError naming the parameters whose shapes differ from the config's model."""
    saved = self._saved_shapes(step, "params")
    if saved is None:
      return  # metadata unreadable: the restore itself will report the problem
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
    """Check a step's files against its checksums (`integrity.verify_step`): CheckpointError naming
    the first file that is missing or differs; False when the step has no checksums."""
    return integrity.verify_step(self._step_dir(step), step)

  def _saved_optimizer(self, step: int) -> dict | None:
    """The optimizer fields a step was saved with: its checksum file's record, else config.json's."""
    recorded = (integrity.read_manifest(self._step_dir(step)) or {}).get("optimizer")
    if isinstance(recorded, dict):
      return recorded
    try:
      return optimizer_fields(load_config(self.workdir))
    except Exception:
      return None

  def _optimizer_change(self, step: int, target: dict) -> str | None:
    """None when the saved optimizer state has the structure of the target's (or the metadata is
    unreadable: then the restore itself decides); else what changed, in words."""
    saved = self._saved_shapes(step, "opt_state")
    if saved is None:
      return None
    want = _shapes(target["opt_state"])
    if saved == want:
      return None
    old = self._saved_optimizer(step)
    changed = _differences(old, optimizer_fields(self.config)) if old and self.config is not None else []
    if changed:
      return "; ".join(changed)
    return f"the saved optimizer state has {len(saved)} arrays, the config's optimizer {len(want)}"

  def _restore_packed(self, step: int, layout: dict, target: dict, parts: tuple[str, ...]) -> dict:
    """A packed step's arrays, read to the host and placed as the target's leaves."""
    item = packing.restore_template(layout, target)
    restored = self.manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(item)))
    return packing.unpack(layout, restored["state"], target, parts)

  def _restore_without_optimizer(self, step: int, abstract: dict, target: dict) -> dict:
    layout = self._layout(step)
    if layout is not None:
      tree = self._restore_packed(step, layout, target, ("params", "ema_params"))
      accum = int(self.config.train.grad_accum_steps) if self.config is not None else 1
      tree["opt_state"] = _continue_schedule(target["opt_state"], int(fetch(tree["step"])), accum)
      return tree
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

  def _live_config(self) -> ml_collections.ConfigDict | None:
    """The config steps are checked against: the run's, compared first with the workdir's
    config.json (`check_same_setup`); without one, config.json itself (None if unreadable)."""
    path = os.path.join(self.workdir, CONFIG_NAME)
    if not fileio.exists(path):
      return self.config
    try:
      saved = load_config(self.workdir)
    except (OSError, ValueError) as e:  # unreadable config.json: train.py writes it again
      log.warning("%s cannot be read (%s); the set-up is compared with the steps' records only.", path, e)
      return self.config
    if self.config is None:
      return saved
    check_same_setup(saved, self.config, self.workdir)
    return self.config

  def _check_recorded_setup(self, step: int, config: ml_collections.ConfigDict | None) -> None:
    """CheckpointError naming each set-up field whose value in `step`'s record differs from the
    config's: the network would be trained or sampled as something it is not."""
    recorded = (integrity.read_manifest(self._step_dir(step)) or {}).get("setup")
    if config is None or not isinstance(recorded, dict):
      return
    changed = [
      f"{k} {a!r} in the checkpoint, {b!r} in the config"
      for k, a, b in setup_differences(recorded, setup_fields(config))
    ]
    if changed:
      source = "the config given" if self.config is not None else os.path.join(self.workdir, CONFIG_NAME)
      raise CheckpointError(
        f"Checkpoint {step} in {self.directory} was saved by a network with another set-up than "
        f"{source} describes: "
        + "; ".join(changed[:8])
        + ". Restoring it would train or sample the network as something it is not. Use the run's own "
        "settings (put them back in its config.json, or drop the overrides), or a new --workdir."
      )

  def restore(self, target_state, step: int | None = None):
    """Restore into the structure and shardings of `target_state`.

    Without `step`, the newest checkpoint; if it cannot be read, or its checksums disagree, the
    previous ones are tried in turn, with a warning (and `save` later replaces the damaged ones).
    A checkpoint whose optimizer state has another structure (the optimizer changed) gives its
    parameters, EMA and step with the target's fresh optimizer state, and a warning. A step whose
    recorded set-up differs from the config (or config.json) is refused (CheckpointError); one
    without checksums is restored with a warning naming it (and listed in `unverified`). Returns
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
    config = self._live_config()
    errors = []
    for s in candidates:
      self.check_compatible(s, target)
      self._check_recorded_setup(s, config)
      try:
        verified = self.verify(s)
        changed = self._optimizer_change(s, target)
        layout = self._layout(s)
        if changed is None and layout is not None:
          tree = self._restore_packed(s, layout, target, packing.PARTS)
        elif changed is None:
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
          self.unverified.add(s)
          log.warning(
            "Checkpoint %d has no checksums (saved before they existed, or interrupted before they were "
            "written): it is restored unverified, so damage in it would go unnoticed.",
            s,
          )
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
