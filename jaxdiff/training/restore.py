"""Restore a trained model from a training workdir: its config, network, schedule and parameters.

The parameters are read as the training loop reads them (`Checkpointer.restore` with its
fallback to older readable steps) into an abstract target (`jax.eval_shape`), so nothing is
initialised just to be overwritten. The target is the train state fully sharded over every
device (`parallel.fsdp_sharding`), whatever mesh wrote the checkpoint: no device ever holds a
whole copy of the optimizer state, so a model trained with `parallel.fsdp` restores for sampling
on the devices that trained it, or on fewer, or on one.
"""

from __future__ import annotations

import hashlib
from typing import Any

import jax
import numpy as np

from jaxdiff import fileio, parallel
from jaxdiff.config_utils import ConfigError, process_from_config, validate_config
from jaxdiff.errors import CheckpointError, SamplingError
from jaxdiff.models import create_model
from jaxdiff.training.checkpointer import Checkpointer, checkpoint_dir
from jaxdiff.training.run_records import load_config
from jaxdiff.training.state import create_train_state

__all__ = ["restore_model", "params_digest", "load_run_config"]


def params_digest(params: Any) -> str:
  """A short hash of every parameter's path, dtype, shape and bytes (identifies a model exactly)."""
  h = hashlib.blake2b(digest_size=12)
  for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
    arr = np.ascontiguousarray(np.asarray(leaf))
    h.update(f"{jax.tree_util.keystr(path)}|{arr.dtype}|{arr.shape}|".encode())
    h.update(arr.tobytes())
  return h.hexdigest()


def load_run_config(workdir: str):
  """The validated config of the training run in `workdir`; SamplingError naming the fix if none."""
  if not fileio.isdir(workdir):
    raise SamplingError(
      f"--workdir={workdir} does not exist; give the folder a training run wrote "
      "(python train.py --config=... --workdir=DIR)."
    )
  try:
    config = load_config(workdir)
    validate_config(config)
  except (CheckpointError, ConfigError) as e:
    raise SamplingError(str(e)) from None
  except ValueError as e:  # malformed JSON
    raise SamplingError(f"{workdir}/config.json cannot be read ({e}).") from None
  return config


def restore_model(workdir: str, params: str = "ema", step: int | None = None, *, config=None):
  """(config, model, schedule, params, step) of the training run in `workdir`.

  params: "ema" (the averaged weights the training grids use) or "raw". step: a checkpoint step,
  default the newest readable one. The returned parameters are host numpy arrays (put them where
  they are needed). Raises SamplingError for a workdir without config or checkpoints, a missing
  step, or a checkpoint that does not match the config's model.
  """
  if params not in ("ema", "raw"):
    raise SamplingError(f"params={params!r}: use 'ema' or 'raw'.")
  workdir = fileio.abspath(workdir)
  config = load_run_config(workdir) if config is None else config
  try:
    ckpt_dir = checkpoint_dir(workdir, config)  # config.train.checkpoint_dir, else WORKDIR/checkpoints
  except CheckpointError as e:
    raise SamplingError(str(e)) from None
  # look before Checkpointer, which would create the folder
  entries = fileio.listdir(ckpt_dir) if fileio.isdir(ckpt_dir) else []
  if not any(e.isdigit() for e in entries):
    raise SamplingError(
      f"No checkpoints in {ckpt_dir}: the run in {workdir} has not saved one yet. "
      "Train first (train.py saves every config.train.checkpoint_every steps and at the end)."
    )
  model = create_model(config)
  schedule = process_from_config(config)  # the Schedule of a 'vp' run, else its process
  abstract = jax.eval_shape(lambda: create_train_state(config, model, jax.random.key(0)))
  mesh = parallel.create_mesh(fsdp=jax.device_count())
  shardings = parallel.fsdp_sharding(abstract, mesh, int(config.parallel.fsdp_min_size))
  abstract = jax.tree_util.tree_map(
    lambda a, sh: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sh), abstract, shardings
  )
  ckpt = Checkpointer(workdir, async_save=False, directory=ckpt_dir)
  try:
    if step is not None and int(step) not in ckpt.all_steps():
      raise SamplingError(
        f"--checkpoint_step={step}: no such checkpoint in {ckpt_dir}; available: {ckpt.all_steps()}."
      )
    state, restored = ckpt.restore(abstract, step=None if step is None else int(step))
  except CheckpointError as e:
    raise SamplingError(str(e)) from None
  finally:
    ckpt.close()
  if restored is None:
    raise SamplingError(f"No readable checkpoint in {ckpt_dir}.")
  tree = state.ema_params if params == "ema" else state.params
  return config, model, schedule, parallel.fetch(tree), int(restored)
