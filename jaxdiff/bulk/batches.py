"""The compiled batch sampler of a bulk run and the loop that fills this process's shards with it.

`make_batch_fn` samples a batch of independent batch-1 runs, one per sample number (its key is
`fold_in(key(seed), i)`), vmapped; `generate_shards` feeds it the sample numbers of the shards to
generate, batch by batch, straight from the shard ranges (nothing proportional to the run's size is
held in memory), and writes each shard as soon as it is complete.
"""

from __future__ import annotations

import collections
import math
import os
import time
from collections.abc import Iterator
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from jaxdiff import fileio, images, parallel, perf
from jaxdiff.bulk.folder import LATENTS_DIR, Survey, remove_superseded
from jaxdiff.bulk.settings import RunSettings, SamplingError
from jaxdiff.config_sampling import sample_from_config
from jaxdiff.shards import shard_name, write_shard

__all__ = ["make_batch_fn", "generate_shards", "index_batches", "Counts"]


def make_batch_fn(config, model, schedule, settings: RunSettings | dict, trajectory: bool = False):
  """fn(params, index int32 [B], labels int32 [B], extra=None) -> samples [B, ...] (and trajectories).

  Sample index[b] uses key fold_in(key(seed), index[b]) and class labels[b] (ignored for
  labels "none"); every sample is an independent batch-1 sampling run, vmapped. `extra` holds
  per-sample conditioning arrays, batch first (`Conditions.arrays`): "context", "x_cond", and
  "inpaint_known" with "inpaint_mask" (inpainting with settings.inpaint's RePaint options).
  `settings`: a RunSettings, or its manifest dict.
  """
  if isinstance(settings, dict):
    settings = RunSettings.from_manifest(settings)
  conditional = settings.conditional
  opts = settings.sampler_options()
  seed = settings.seed

  def one(params, key, label, ex):
    kw = {k: v[None] for k, v in ex.items()}
    out = sample_from_config(
      config,
      model,
      schedule,
      params,
      key,
      1,
      label[None] if conditional else None,
      return_trajectory=trajectory,
      **kw,
      **opts,
    )
    if trajectory:
      x, traj = out
      return x[0], traj["x"][:, 0], traj["x0"][:, 0]
    return out[0]

  def fn(params, index, labels, extra=None):
    base = jax.random.key(seed)
    keys = jax.vmap(lambda i: jax.random.fold_in(base, i))(index)
    return jax.vmap(one, in_axes=(None, 0, 0, 0))(params, keys, labels, dict(extra or {}))

  return fn


_COMPILED: collections.OrderedDict = collections.OrderedDict()
_COMPILED_MAX = 4


def _compiled(config, model, schedule, settings: RunSettings, batch: int, mesh, dev_params, extra_spec=None):
  """The compiled batch sampler, reused by later calls in this process with the same model, settings,
  batch and devices (the parameters are an argument, so they may differ). `extra_spec`: {name:
  (per-sample shape, dtype)} of the per-sample conditioning arrays, or None."""
  options = settings.sampler_options()
  extra_key = tuple(sorted((k, tuple(v[0]), str(v[1])) for k, v in (extra_spec or {}).items()))
  key = (
    config.to_json_best_effort(sort_keys=True),
    tuple(sorted(options.items())),
    settings.seed,
    settings.conditional,
    batch,
    tuple(d.id for d in mesh.devices.flat),
    mesh.devices.shape,
    jax.tree_util.tree_structure(dev_params),
    extra_key,
    tuple(sorted(perf.cpu_compiler_options().items())),
  )
  if key in _COMPILED:
    _COMPILED.move_to_end(key)
    return _COMPILED[key]
  data = parallel.data_sharding(mesh)
  param_shardings = jax.tree_util.tree_map(lambda a: a.sharding, dev_params)  # replicated or fsdp
  arg = jax.ShapeDtypeStruct((batch,), jnp.int32, sharding=data)
  args = [dev_params, arg, arg]
  if extra_spec:
    args.append(
      {
        k: jax.ShapeDtypeStruct((batch,) + tuple(shp), dt, sharding=data)
        for k, (shp, dt) in extra_spec.items()
      }
    )
  fn = jax.jit(
    make_batch_fn(config, model, schedule, settings),
    in_shardings=(param_shardings,) + (data,) * (len(args) - 1),
    out_shardings=data,
  )
  compiled = fn.lower(*args).compile(compiler_options=perf.compiler_options())
  _COMPILED[key] = compiled
  while len(_COMPILED) > _COMPILED_MAX:
    _COMPILED.popitem(last=False)
  return compiled


class ShardWriter:
  """Collects samples in work order and writes each shard as soon as it is complete."""

  def __init__(
    self, output: str, todo: list[tuple[int, int]], settings: RunSettings, tag: str, on_shard, run: dict
  ):
    self.output, self.kind, self.labels_of, self.tag, self.on_shard = (
      output, settings.kind, settings.labels_of, tag, on_shard
    )  # fmt: skip
    self.run, self.dtype = run, settings.sample_dtype
    self.latents = os.path.join(output, LATENTS_DIR) if settings.keep_latents else None
    self.zbuf: list[np.ndarray] = []
    self.queue = collections.deque(todo)
    self.buf: list[np.ndarray] = []
    self.count = 0
    self.written: list[str] = []

  def add(self, x: np.ndarray, z: np.ndarray | None = None) -> None:
    """Samples `x` (and, with keep_latents, their latents `z`) in work order."""
    self.buf.append(x)
    if self.latents is not None:
      self.zbuf.append(z)
    self.count += len(x)
    while self.queue and self.count >= self.queue[0][1] - self.queue[0][0]:
      start, end = self.queue.popleft()
      n = end - start
      allx = np.concatenate(self.buf) if len(self.buf) > 1 else self.buf[0]
      self.buf = [allx[n:]] if len(allx) > n else []
      self.count -= n
      if self.latents is not None:  # before the image shard, whose presence marks the shard complete
        allz = np.concatenate(self.zbuf) if len(self.zbuf) > 1 else self.zbuf[0]
        self.zbuf = [allz[n:]] if len(allz) > n else []
        fileio.makedirs(self.latents, exist_ok=True)
        write_shard(
          self.latents, start, end, "images", allz[:n], self.labels_of(np.arange(start, end)),
          tag=self.tag, run=self.run, dtype=np.float32,
        )  # fmt: skip
      write_shard(
        self.output,
        start,
        end,
        self.kind,
        allx[:n],
        self.labels_of(np.arange(start, end)),
        tag=self.tag,
        run=self.run,
        dtype=self.dtype,
      )
      self.written.append(shard_name(start, end))
      self.on_shard(start, end)


class Counts(NamedTuple):
  generated: int = 0
  generation_s: float = 0.0
  nonfinite: int = 0
  compile_s: float = 0.0


def index_batches(todo: list[tuple[int, int]], batch: int) -> Iterator[np.ndarray]:
  """The sample numbers of the shard ranges `todo`, in order, `batch` at a time (int32; the last
  batch may be shorter), made as they are needed."""
  parts: list[np.ndarray] = []
  count = 0
  for start, end in todo:
    at = start
    while at < end:
      take = min(batch - count, end - at)
      parts.append(np.arange(at, at + take, dtype=np.int32))
      count += take
      at += take
      if count == batch:
        yield parts[0] if len(parts) == 1 else np.concatenate(parts)
        parts, count = [], 0
  if count:
    yield parts[0] if len(parts) == 1 else np.concatenate(parts)


def _padded_batches(todo: list[tuple[int, int]], labels_of, batch: int):
  """(valid, index, labels) of each batch; the last is padded with copies of its last sample."""
  for idx in index_batches(todo, batch):
    lab = labels_of(idx)
    valid = len(idx)
    if valid < batch:  # the copies are dropped after sampling
      idx = np.concatenate([idx, np.full(batch - valid, idx[-1], np.int32)])
      lab = np.concatenate([lab, np.full(batch - valid, lab[-1], np.int32)])
    yield valid, idx, lab


def _sampling_fsdp(config, local_devices: int) -> int:
  """How many of this process's devices share one copy of the parameters when sampling: the
  training run's `parallel.fsdp` where it divides the local devices (else their largest common
  divisor), so a model that only fits sharded also samples sharded; 1 = replicated."""
  return math.gcd(max(int(config.parallel.fsdp), 1), local_devices)


def _place_params(restored, devices):
  """(mesh, data sharding, parameters on the devices): replicated, or sharded as training did."""
  mesh = parallel.create_mesh(devices, _sampling_fsdp(restored.config, len(devices)))
  dev_params = jax.device_put(
    restored.params,
    parallel.fsdp_sharding(restored.params, mesh, int(restored.config.parallel.fsdp_min_size)),
  )
  return mesh, parallel.data_sharding(mesh), dev_params


def _to_store(x: np.ndarray, settings: RunSettings) -> np.ndarray:
  """Samples as the shards store them: uint8 pixels, or float32 values unchanged."""
  return images.to_uint8(x) if settings.sample_format == "uint8" else x.astype(np.float32)


def generate_shards(
  output: str,
  settings: RunSettings,
  conditions,
  restored,
  survey: Survey,
  batch: int,
  tag: str,
  progress: bool,
) -> Counts:
  """Generate and write this process's missing shards (`survey.todo`) on its local devices.

  `restored`: the run's model (`jaxdiff.bulk.plan.Restored`); `conditions`: its per-sample tables
  (`Conditions`). Returns the Counts; SamplingError before writing a shard with NaN or Inf."""
  extra_spec = None
  if not conditions.empty:
    probe = conditions.arrays(np.zeros(1, np.int64))
    extra_spec = {k: (v.shape[1:], v.dtype) for k, v in probe.items()}
  mesh, data, dev_params = _place_params(restored, jax.local_devices())
  t0 = time.perf_counter()
  compiled = _compiled(
    restored.config, restored.model, restored.schedule, settings, batch, mesh, dev_params, extra_spec
  )
  compile_s = time.perf_counter() - t0
  done_before = sum(e - b for b, e in survey.mine) - survey.work
  pbar = tqdm(
    total=done_before + survey.work,
    initial=done_before,
    disable=not (jax.process_index() == 0 and progress),
    unit="sample",
    dynamic_ncols=True,
    mininterval=1.0,
    desc="sampling",
  )

  def superseded(a: int, b: int) -> None:
    remove_superseded(output, a, b)
    if writer.latents is not None and fileio.isdir(writer.latents):
      remove_superseded(writer.latents, a, b)

  writer = ShardWriter(output, survey.todo, settings, tag, superseded, restored.shard_run)
  latent = restored.latent
  generated = nonfinite = 0

  def consume(valid: int, idx: np.ndarray, out) -> None:
    nonlocal generated, nonfinite
    x = np.asarray(out)[:valid]
    bad = int((~np.isfinite(x.reshape(valid, -1)).all(axis=1)).sum())
    if bad:  # a diverged model: refuse to store NaN (as black images or NaN points) as samples
      raise SamplingError(
        f"{bad} of the samples {int(idx[0])}..{int(idx[valid - 1])} from checkpoint step {restored.step} are "
        f"NaN or Inf: the model has diverged. No shard holding them was written ({len(writer.written)} "
        "complete shard(s) were). Sample another checkpoint (--checkpoint_step), or retrain (lower "
        "config.optim.learning_rate; config.train.nan_policy='stop' stops at the first NaN)."
      )
    nonfinite += bad
    if latent is None:
      writer.add(_to_store(x, settings))
    else:  # a latent model: store what its autoencoder decodes (and the latents with keep_latents)
      writer.add(_to_store(latent.decode(x), settings), x.astype(np.float32))
    generated += valid
    pbar.update(valid)

  t0 = time.perf_counter()
  inflight: collections.deque = collections.deque()
  try:
    for valid, idx, lab in _padded_batches(survey.todo, settings.labels_of, batch):
      extra = (
        [] if not extra_spec else [{k: jax.device_put(v, data) for k, v in conditions.arrays(idx).items()}]
      )
      inflight.append(
        (valid, idx, compiled(dev_params, jax.device_put(idx, data), jax.device_put(lab, data), *extra))
      )
      if len(inflight) > 1:  # keep one batch queued on the devices while the host writes
        consume(*inflight.popleft())
    while inflight:
      consume(*inflight.popleft())
  finally:
    pbar.close()
  return Counts(generated, time.perf_counter() - t0, nonfinite, compile_s)
