"""Devices, the 1-D data mesh, shardings and multi-host start-up: all of jaxdiff's parallelism.

pmap's data-parallel semantics on today's JAX: `jax.jit` over a Mesh with one axis "data";
parameters, optimizer state and EMA replicated (`P()`), batches split along the first axis
(`P("data")`). One process or many, the same program.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from absl import flags
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxdiff.errors import ConfigError

__all__ = [
  "initialize",
  "define_process_flags",
  "create_mesh",
  "replicated",
  "data_sharding",
  "per_device_batch",
  "check_global_batch",
  "to_global",
  "is_main_process",
  "fetch",
]

log = logging.getLogger(__name__)
_initialized = False


def initialize(
  coordinator_address: str | None = None, num_processes: int | None = None, process_id: int | None = None
) -> None:
  """Start `jax.distributed` when running as several processes; a no-op for a single process.

  With explicit arguments (clusters without auto-detection, or local multi-process tests) they
  are passed through; on a Cloud TPU VM slice (TPU_WORKER_HOSTNAMES with several hosts) or
  under SLURM/Open MPI, JAX auto-detects the cluster. CPU runs use gloo collectives.
  """
  global _initialized
  if _initialized:
    return
  explicit = coordinator_address is not None or (num_processes or 1) > 1
  auto = (
    len(os.environ.get("TPU_WORKER_HOSTNAMES", "").split(",")) > 1
    or "SLURM_JOB_ID" in os.environ
    and int(os.environ.get("SLURM_NTASKS", "1")) > 1
    or int(os.environ.get("OMPI_COMM_WORLD_SIZE", "1")) > 1
  )
  if not (explicit or auto):
    return
  try:
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
  except Exception:  # option renamed or absent in this JAX: its default is used
    pass
  if explicit:
    if coordinator_address is None or num_processes is None or process_id is None:
      raise ConfigError(
        "Multi-process start-up needs all of --coordinator_address, --num_processes and "
        "--process_id (or none of them, to auto-detect on TPU VMs / SLURM)."
      )
    jax.distributed.initialize(
      coordinator_address=coordinator_address, num_processes=num_processes, process_id=process_id
    )
  else:
    jax.distributed.initialize()
  _initialized = True
  log.info("jax.distributed: process %d of %d", jax.process_index(), jax.process_count())


def define_process_flags() -> Callable[[], None]:
  """Define the absl flags --coordinator_address, --num_processes and --process_id (train.py
  and sample.py share them); returns a function that calls `initialize` with their values."""
  coord = flags.DEFINE_string(
    "coordinator_address", None, "host:port of process 0 (multi-process without auto-detection)."
  )
  nproc = flags.DEFINE_integer("num_processes", None, "Number of processes (multi-process).")
  pid = flags.DEFINE_integer("process_id", None, "This process's index (multi-process).")
  return lambda: initialize(coord.value, nproc.value, pid.value)


def create_mesh(devices: Any = None) -> Mesh:
  """A 1-D mesh ("data",) over every device of every process (or the given devices)."""
  devs = np.asarray(jax.devices() if devices is None else devices)
  return Mesh(devs.reshape(-1), ("data",))


def replicated(mesh: Mesh) -> NamedSharding:
  """Same value on every device: parameters, optimizer state, EMA, keys."""
  return NamedSharding(mesh, P())


def data_sharding(mesh: Mesh, leading_axes: int = 0) -> NamedSharding:
  """Batch split along the first axis (after `leading_axes` unsplit axes, e.g. scanned steps)."""
  return NamedSharding(mesh, P(*([None] * leading_axes), "data"))


def check_global_batch(global_batch: int, mesh: Mesh | None = None, field: str = "train.batch_size") -> int:
  """The per-device batch; a clear error when the global batch does not divide over the devices."""
  n = mesh.devices.size if mesh is not None else jax.device_count()
  if global_batch < 1 or global_batch % n:
    lo = max(n, global_batch // n * n)
    raise ConfigError(
      f"config.{field}={global_batch} must be a positive multiple of the device count "
      f"({n} devices over {jax.process_count()} process(es)); try {lo} or {lo + n}."
    )
  return global_batch // n


per_device_batch = check_global_batch


def to_global(tree: Any, sharding: NamedSharding) -> Any:
  """Per-process numpy arrays -> global jax Arrays laid out by `sharding` (multi-host aware)."""
  return jax.tree_util.tree_map(
    lambda a: jax.make_array_from_process_local_data(sharding, np.asarray(a)), tree
  )


def fetch(tree: Any) -> Any:
  """Host numpy copies of (replicated) global arrays, also when they span several processes."""

  def one(x):
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
      return np.asarray(x.addressable_data(0))
    return np.asarray(x)

  return jax.tree_util.tree_map(one, tree)


def is_main_process() -> bool:
  """True on process 0: the one that writes logs, images and summaries."""
  return jax.process_index() == 0
