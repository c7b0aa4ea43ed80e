"""Devices, the ("data", "fsdp") mesh, shardings and multi-host start-up: all of jaxdiff's parallelism.

`jax.jit` over a 2-D Mesh ("data", "fsdp") of every device: batches are split along their first
axis over both mesh axes (`P(("data", "fsdp"))`). With `config.parallel.fsdp = 1` (the default)
the fsdp axis has size 1 and parameters, optimizer state and EMA are replicated: pmap's data
parallelism. With fsdp = N they are fully sharded over groups of N devices (`fsdp_spec`: each
array along its largest dimension divisible by N, small arrays replicated) and XLA inserts the
all-gathers of the forward/backward pass and the reduce-scatters of the gradients. One process
or many, the same program.

Why a sharding *rule* over array shapes rather than flax partitioning metadata
(`nn.with_partitioning`): the rule needs no annotation in any model (UNet, DiT, MLP or a
user's), gives Adam's moments, MultiSteps' accumulators and the EMA the same layout as the
parameters they mirror (same shapes, same rule), and keeps the state a tree of plain arrays, so
a checkpoint is independent of the mesh it was written on and restores onto any other.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from absl import flags
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxdiff.errors import ConfigError

__all__ = [
  "initialize",
  "define_process_flags",
  "create_mesh",
  "mesh_from_config",
  "replicated",
  "data_sharding",
  "fsdp_spec",
  "fsdp_sharding",
  "bytes_per_device",
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


MESH_AXES = ("data", "fsdp")


def create_mesh(devices: Any = None, fsdp: int = 1) -> Mesh:
  """A 2-D mesh ("data", "fsdp") of shape (n // fsdp, fsdp) over every device of every process
  (or the given devices). Devices keep `jax.devices()`'s order (process-major), so an fsdp group
  lies within one process whenever fsdp <= its local device count."""
  devs = np.asarray(jax.devices() if devices is None else devices).reshape(-1)
  fsdp = int(fsdp)
  if fsdp < 1 or devs.size % fsdp:
    raise ConfigError(
      f"config.parallel.fsdp={fsdp} must be a positive divisor of the device count ({devs.size} devices "
      f"over {jax.process_count()} process(es)); try one of {_divisors(devs.size)}."
    )
  return Mesh(devs.reshape(devs.size // fsdp, fsdp), MESH_AXES)


def _divisors(n: int) -> list[int]:
  return [d for d in range(1, n + 1) if n % d == 0]


def mesh_from_config(config: Any, devices: Any = None) -> Mesh:
  """The mesh of `config.parallel.fsdp` (ConfigError naming the field when it does not divide
  the device count)."""
  fsdp = config.parallel.fsdp
  if isinstance(fsdp, bool) or not isinstance(fsdp, (int, np.integer)):
    raise ConfigError(f"config.parallel.fsdp={fsdp!r} must be a positive integer (1 = pure data parallel).")
  return create_mesh(devices, int(fsdp))


def replicated(mesh: Mesh) -> NamedSharding:
  """Same value on every device: keys, metrics, and the train state under fsdp = 1."""
  return NamedSharding(mesh, P())


def data_sharding(mesh: Mesh, leading_axes: int = 0) -> NamedSharding:
  """Batch split along the first axis (after `leading_axes` unsplit axes, e.g. scanned steps)
  over every axis of the mesh: P(("data", "fsdp"))."""
  return NamedSharding(mesh, P(*([None] * leading_axes), tuple(mesh.axis_names)))


def fsdp_spec(shape: tuple[int, ...], fsdp: int, min_size: int = 0) -> P:
  """The rule of fully sharded data parallelism for one array: split along its largest dimension
  divisible by `fsdp` (the last of equals, e.g. a kernel's output features); replicated when fsdp
  is 1, when the array has fewer than `min_size` elements (biases, norms: gathering them costs
  more latency than their memory is worth) or when no dimension divides."""
  shape = tuple(int(d) for d in shape)
  if fsdp <= 1 or not shape or int(np.prod(shape)) < min_size:
    return P()
  best = None
  for i, d in enumerate(shape):
    if d % fsdp == 0 and (best is None or d >= shape[best]):
      best = i
  if best is None:
    return P()
  return P(*([None] * best), "fsdp")


def fsdp_sharding(tree: Any, mesh: Mesh, min_size: int = 0) -> Any:
  """NamedShardings for every array leaf of `tree` (arrays or `jax.eval_shape` structs) by
  `fsdp_spec` over the mesh's "fsdp" axis; replicated along "data"."""
  n = int(dict(zip(mesh.axis_names, mesh.devices.shape)).get("fsdp", 1))
  return jax.tree_util.tree_map(
    lambda a: NamedSharding(mesh, fsdp_spec(getattr(a, "shape", ()), n, min_size)), tree
  )


def bytes_per_device(tree: Any, shardings: Any = None) -> int:
  """Bytes one device holds of `tree` (arrays or shape structs) under `shardings` (default: each
  leaf's own `.sharding`; replicated when it has none). Computed from shapes, not measured."""
  leaves = jax.tree_util.tree_leaves(tree)
  shards = [getattr(a, "sharding", None) for a in leaves]
  if shardings is not None:
    shards = jax.tree_util.tree_leaves(shardings, is_leaf=lambda x: isinstance(x, jax.sharding.Sharding))
  total = 0
  for a, sh in zip(leaves, shards, strict=True):
    shape = tuple(getattr(a, "shape", ()))
    local = sh.shard_shape(shape) if sh is not None else shape
    total += int(np.prod(local, dtype=np.int64)) * np.dtype(a.dtype).itemsize
  return total


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
  """Host numpy copies of global arrays, also when they span several processes. Sharded arrays
  (fsdp) that span processes are all-gathered: then every process must call `fetch` on them."""

  def one(x):
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
      if x.sharding.is_fully_replicated:
        return np.asarray(x.addressable_data(0))
      return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(x)

  return jax.tree_util.tree_map(one, tree)


def is_main_process() -> bool:
  """True on process 0: the one that writes logs, images and summaries."""
  return jax.process_index() == 0
