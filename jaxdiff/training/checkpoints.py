"""Orbax checkpoints of the train state: one wrapper around `ocp.CheckpointManager`.

Layout: `workdir/checkpoints/<step>/state` (Orbax, written to a temporary folder and renamed when
complete, so a crash never leaves a half-written step behind) and `workdir/config.json`.
Restoring reads onto the current mesh, so a run may resume on a different number of devices.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from absl import logging as absl_logging

from jaxdiff import config_utils
from jaxdiff.errors import CheckpointError
from jaxdiff.fileio import atomic_write_text
from jaxdiff.parallel import fetch

__all__ = ["CheckpointError", "Checkpointer", "save_config", "load_config", "state_to_tree", "tree_to_state"]

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
  flat = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {jax.tree_util.keystr(p): tuple(getattr(v, "shape", ())) for p, v in flat}


class Checkpointer:
  """Save / restore TrainStates in `workdir/checkpoints`, keeping the newest `keep`."""

  def __init__(self, workdir: str, keep: int = 3, async_save: bool = True):
    self.directory = os.path.join(os.path.abspath(workdir), "checkpoints")
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

  def save(self, state, force: bool = True) -> bool:
    step = int(fetch(state.step))
    if step in self.manager.all_steps():
      return False
    saved = self.manager.save(
      step, args=ocp.args.Composite(state=ocp.args.StandardSave(state_to_tree(state))), force=force
    )
    return bool(saved)

  def reached_preemption(self, step: int) -> bool:
    try:
      return bool(self.manager.reached_preemption(step))
    except Exception:  # no preemption service (single process, CPU): the SIGTERM handler covers it
      return False

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()

  def check_compatible(self, step: int, target_tree: dict) -> None:
    """Raise CheckpointError naming the parameters whose shapes differ from the config's model."""
    try:
      level = absl_logging.get_verbosity()
      absl_logging.set_verbosity(absl_logging.ERROR)  # orbax warns about items it was not asked to restore
      try:
        meta = self.manager.item_metadata(step)
      finally:
        absl_logging.set_verbosity(level)
      meta = meta["state"] if "state" in meta else meta
      saved = _shapes(meta["params"])
    except Exception:
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

  def restore(self, target_state, step: int | None = None):
    """Restore into the structure and shardings of `target_state`.

    Without `step`, the newest checkpoint; if it cannot be read (corrupt or incomplete), the
    previous ones are tried in turn, with a warning. Returns (state, step) or (target_state, None)
    when there is no checkpoint.
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
    errors = []
    for s in candidates:
      self.check_compatible(s, target)
      try:
        restored = self.manager.restore(s, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract)))
        tree = restored["state"]
        _validate_finite(tree, s)
        if errors:
          log.warning(
            "Resumed from step %d after skipping unreadable checkpoint(s): %s", s, "; ".join(errors)
          )
        return tree_to_state(target_state, tree), s
      except CheckpointError as e:
        errors.append(str(e))
      except Exception as e:  # corrupt files, truncated arrays, missing metadata
        errors.append(f"step {s}: {type(e).__name__}: {str(e).splitlines()[0][:200]}")
      log.warning("Checkpoint %s could not be restored (%s); trying an older one.", s, errors[-1])
    raise CheckpointError(
      f"No readable checkpoint in {self.directory}: "
      + " | ".join(errors)
      + "\nMove the damaged step folders aside or start from a new --workdir."
    )


def _validate_finite(tree: dict, step: int) -> None:
  leaves = jax.tree_util.tree_leaves(tree["params"])
  if not all(bool(np.all(np.isfinite(fetch(x)))) for x in leaves[:4]):
    raise CheckpointError(f"step {step}: parameters contain NaN/Inf")


def save_config(config: ml_collections.ConfigDict, workdir: str) -> str:
  """workdir/config.json, written atomically (the config a run was trained with)."""
  return atomic_write_text(
    os.path.join(workdir, "config.json"), config.to_json_best_effort(indent=2, sort_keys=True)
  )


def load_config(workdir: str) -> ml_collections.ConfigDict:
  """The config saved by train.py in workdir/config.json, overlaid on the package defaults
  (`config_utils.from_json`: lists come back as tuples; an older run's missing fields are noted)."""
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    raise CheckpointError(
      f"{path} not found: {workdir} is not a jaxdiff training workdir "
      "(train.py writes config.json there when it starts)."
    )
  with open(path) as f:
    return config_utils.from_json(json.load(f), source=path)
