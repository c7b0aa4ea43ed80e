"""`generate(workdir, output, num_samples=...)`: bulk sampling of a trained model, resumable, on every device.

Determinism. Sample i is drawn with the key `fold_in(key(seed), i)` and its label is a function of
i alone (`labels_for`). Each sample runs its own `jaxdiff.sample` call of batch 1 (via
`generation.sample_from_config`), `jax.vmap`-ed over the keys and labels of a batch, so its
starting noise and every per-step noise come from its own key: the samples do not depend on the
batch size, the number of devices or processes, or which shards a resumed run had left to do.
Floating point can still differ in the last bits when XLA picks another kernel for another
batch shape or device count, so a uint8 pixel can differ by 1 where a value sits on a rounding
boundary (tests/test_sample_cli.py bounds the difference).

Parallelism. Shards are the unit of work and of output: shard j (samples [j S, (j + 1) S)) belongs
to process j % process_count, which generates it on its own devices (a ("data", "fsdp") mesh
over `jax.local_devices()`, batches split over it, parameters replicated or, for a run trained
with `parallel.fsdp`, sharded the same way: the training layout) and writes it itself. Processes share nothing while they sample (no collective per batch, no
lockstep), so on a shared file system every shard is written exactly once, and with per-host
disks each host holds its own shards. One barrier at the end gathers the counts for the summary.

Resume. The output folder's `run.json` records the run (settings, checkpoint step, a digest of
the parameters), and every shard records the part of it that decides its samples (`shard_run`:
seed, sampler settings, labels, conditioning, checkpoint step, parameter digest). Running again
checks every existing shard (`shards.check_shard`) and generates only the missing or damaged ones,
and the ones of another run (a shard copied in from a --seed=1 run is not a seed-0 shard); a
different run into the same folder is an error. Samples with NaN or Inf (a diverged model) are
never written: the run stops with a SamplingError before the shard that would hold them. A larger
--num_samples extends a run (its partial last shard is replaced by a full one); a smaller one is
an error.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import logging
import math
import os
import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from tqdm.auto import tqdm

from jaxdiff import fileio, images, parallel, perf
from jaxdiff.bulk import figures
from jaxdiff.bulk.conditions import Conditions
from jaxdiff.bulk.restore import load_run_config, params_digest, restore_model
from jaxdiff.bulk.settings import (
  IDENTITY_KEYS,
  MANIFEST_FORMAT,
  RunSettings,
  SamplingError,
  compare_manifest,
  grid_times,
  labels_summary,
  resolve_run,
)
from jaxdiff.fileio import atomic_write_bytes
from jaxdiff.generation import sample_from_config
from jaxdiff.perf import setup_compilation_cache
from jaxdiff.shards import (
  check_shard,
  layout,
  parse_shard_name,
  read_shard,
  shard_name,
  temp_name,
  write_shard,
)

__all__ = ["generate", "plan_run", "RunPlan", "make_batch_fn", "default_output", "shard_run"]

log = logging.getLogger("jaxdiff.sample")

MANIFEST = "run.json"
SUMMARY = "summary.json"
GRID, SCATTER, TRAJECTORY = "grid.png", "scatter.png", "trajectory.png"
SCATTER_POINTS = 5000  # samples in scatter.png (2-D data)
TRAJECTORY_SAMPLES = {"images": 8, "points": 1000}  # samples in trajectory.png, by kind


def default_output(workdir: str) -> str:
  return os.path.join(fileio.abspath(workdir), "generated")


# The manifest fields a shard records beyond IDENTITY_KEYS; shard_size is left out (the index check
# covers where a shard sits), as is num_samples (a run can be extended).
_SHARD_RUN_EXTRA = ("checkpoint_step", "params_digest")


def shard_run(manifest: dict) -> dict:
  """What each shard records of its run (`shards.write_shard(run=...)`): the fields that decide
  sample i, so a shard from any other run is told apart when a folder is resumed."""
  keys = [k for k in IDENTITY_KEYS if k != "shard_size"] + list(_SHARD_RUN_EXTRA)
  return {k: manifest.get(k) for k in keys}


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


def _read_json(path: str) -> dict:
  with fileio.open(path) as f:
    return json.load(f)


def _write_json(path: str, obj: dict, tag: str) -> None:
  atomic_write_bytes(
    path,
    (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode(),
    tmp_name=temp_name(os.path.basename(path), tag),
  )


def _existing_manifest(output: str) -> dict | None:
  """The folder's manifest, None for a new or empty folder; SamplingError for anything else."""
  if fileio.exists(output) and not fileio.isdir(output):
    raise SamplingError(f"--output={output} is a file, not a folder.")
  if not fileio.isdir(output):
    return None
  path = os.path.join(output, MANIFEST)
  if not fileio.exists(path):
    foreign = [e for e in fileio.listdir(output) if not (e.startswith(".") and e.endswith(".tmp"))]
    if foreign:
      raise SamplingError(
        f"--output={output} already holds files ({', '.join(sorted(foreign)[:5])}) but no "
        f"{MANIFEST}: it is not a jaxdiff sample folder. Use a new or empty --output."
      )
    return None
  try:
    return _read_json(path)
  except (OSError, ValueError) as e:
    raise SamplingError(
      f"{path} cannot be read ({e}); use a new --output (or delete the damaged folder)."
    ) from None


def _round_up(n: int, k: int) -> int:
  return -(-n // k) * k


class _ShardWriter:
  """Collects samples in work order and writes each shard as soon as it is complete."""

  def __init__(
    self, output: str, todo: list[tuple[int, int]], kind: str, labels_of, tag: str, on_shard, run: dict
  ):
    self.output, self.kind, self.labels_of, self.tag, self.on_shard = output, kind, labels_of, tag, on_shard
    self.run = run
    self.queue = collections.deque(todo)
    self.buf: list[np.ndarray] = []
    self.count = 0
    self.written: list[str] = []

  def add(self, x: np.ndarray) -> None:
    self.buf.append(x)
    self.count += len(x)
    while self.queue and self.count >= self.queue[0][1] - self.queue[0][0]:
      start, end = self.queue.popleft()
      n = end - start
      allx = np.concatenate(self.buf) if len(self.buf) > 1 else self.buf[0]
      self.buf = [allx[n:]] if len(allx) > n else []
      self.count -= n
      write_shard(
        self.output,
        start,
        end,
        self.kind,
        allx[:n],
        self.labels_of(np.arange(start, end)),
        tag=self.tag,
        run=self.run,
      )
      self.written.append(shard_name(start, end))
      self.on_shard(start, end)


def _remove_superseded(output: str, start: int, end: int) -> list[str]:
  """Delete shards that start where the complete shard [start, end) starts but end elsewhere (the
  partial last shard of a run that was later extended)."""
  removed = []
  for name in fileio.listdir(output):
    r = parse_shard_name(name)
    if r is not None and r[0] == start and r[1] != end:
      fileio.remove(os.path.join(output, name))
      removed.append(name)
  return removed


def _remove_temps(output: str, mine: set[tuple[int, int]]) -> None:
  """Leftover temporary files of shards this process owns (a run killed while writing)."""
  for name in fileio.listdir(output):
    if name.startswith(".samples_") and name.endswith(".tmp"):
      r = parse_shard_name(name[1:].rsplit(".", 2)[0])
      if r is not None and r in mine:
        fileio.remove(os.path.join(output, name))


def _first_samples(output: str, shards: list[tuple[int, int]], kind: str, limit: int):
  """Up to `limit` samples (and labels) from the first shards this process can read."""
  xs, ls, got = [], [], 0
  for s, e in shards:
    path = os.path.join(output, shard_name(s, e))
    if got >= limit:
      break
    if not fileio.exists(path):
      continue
    arrays = read_shard(path)
    xs.append(arrays[kind][: limit - got])
    ls.append(arrays["labels"][: limit - got])
    got += len(xs[-1])
  if not xs:
    return None, None
  return np.concatenate(xs), np.concatenate(ls)


# ---- the run: plan, restore, survey the folder, generate the missing shards, summarise ----


@dataclasses.dataclass(frozen=True)
class RunPlan:
  """What a `generate` call will do, decided and checked before anything is restored or written."""

  workdir: str
  output: str
  config: Any
  settings: RunSettings
  conditions: Conditions
  previous: dict | None  # the output folder's manifest (a run to resume or extend), or None
  checkpoint_step: int | None  # None: the newest readable checkpoint
  batch_size: int  # samples per compiled call over all processes
  grid_size: int

  @property
  def shards(self) -> list[tuple[int, int]]:
    return layout(self.settings.num_samples, self.settings.shard_size)


def plan_run(
  workdir: str,
  output: str | None = None,
  *,
  batch_size: int | None = None,
  checkpoint_step: int | None = None,
  grid_size: int = 100,
  **choices: Any,
) -> RunPlan:
  """The RunPlan of `generate(workdir, output, batch_size=..., checkpoint_step=..., grid_size=...,
  **choices)` (choices: `resolve_run`'s keywords); SamplingError before anything is touched."""
  workdir = fileio.abspath(workdir)
  config = load_run_config(workdir)
  settings, conditions = resolve_run(config, **choices)
  output = fileio.abspath(output) if output else default_output(workdir)
  if grid_size < 1:
    raise SamplingError(f"grid_size={grid_size} must be >= 1.")
  previous = _existing_manifest(output)
  if previous is not None:
    requested = dict(settings.manifest(), format=MANIFEST_FORMAT)
    if checkpoint_step is not None:
      requested["checkpoint_step"] = int(checkpoint_step)
    compare_manifest(previous, requested, output)  # settings first: fail before restoring anything
    if checkpoint_step is None:
      checkpoint_step = previous.get("checkpoint_step")
  batch_size = int(config.sample.batch_size if batch_size is None else batch_size)
  if batch_size < 1:
    raise SamplingError(f"--batch_size={batch_size} must be >= 1.")
  return RunPlan(
    workdir, output, config, settings, conditions, previous, checkpoint_step, batch_size, grid_size
  )


class _Restored(NamedTuple):
  config: Any
  model: Any
  schedule: Any
  params: Any  # host arrays
  step: int
  manifest: dict  # the run's manifest: settings, checkpoint step, parameter digest


def _restore(plan: RunPlan) -> _Restored:
  """The model of the plan's checkpoint, checked against the folder's run."""
  previous, step = plan.previous, plan.checkpoint_step
  try:
    config, model, schedule, params, step = restore_model(
      plan.workdir, plan.settings.params, step, config=plan.config
    )
  except SamplingError as e:
    if previous is not None and step == previous.get("checkpoint_step"):
      raise SamplingError(
        f"{e}\nThe run in {plan.output} was started from checkpoint step {step}; it "
        "cannot be resumed without it. Use a new --output."
      ) from None
    raise
  manifest = dict(
    plan.settings.manifest(),
    format=MANIFEST_FORMAT,
    checkpoint_step=step,
    params_digest=params_digest(params),
    workdir=plan.workdir,
  )
  if previous is not None:
    compare_manifest(previous, manifest, plan.output)
  return _Restored(config, model, schedule, params, step, manifest)


class _Survey(NamedTuple):
  mine: list[tuple[int, int]]  # this process's shards
  todo: list[tuple[int, int]]  # those to generate: missing or damaged
  reused: int  # samples in complete shards
  regenerated: list[str]  # damaged shards generated again

  @property
  def work(self) -> int:
    return sum(e - s for s, e in self.todo)


def _survey(plan: RunPlan, process: int, processes: int, progress: bool, run: dict) -> _Survey:
  """Which of this process's shards are complete (checked, not assumed, and of this `run`) and which
  to generate."""
  s_ = plan.settings
  mine = [sh for j, sh in enumerate(plan.shards) if j % processes == process]
  _remove_temps(plan.output, set(mine))
  todo, regenerated, reused = [], [], 0
  for s, e in mine:
    path = os.path.join(plan.output, shard_name(s, e))
    if fileio.exists(path):
      problem = check_shard(path, s, e, s_.kind, s_.data_shape, s_.labels_of(np.arange(s, e)), run=run)
      if problem is None:
        reused += e - s
        _remove_superseded(plan.output, s, e)
        continue
      log.warning("Shard %s cannot be reused (%s): generating it again.", path, problem)
      if process == 0 and progress:
        print(
          f"jaxdiff sample: {shard_name(s, e)} cannot be reused ({problem}); generating it again", flush=True
        )
      regenerated.append(shard_name(s, e))
    todo.append((s, e))
  return _Survey(mine, todo, reused, regenerated)


def _guidance_summary(s) -> str:
  """The guidance of a run in a few words: the scale (or the schedule's ends), rescale, interval."""
  g = s.guidance or {}
  sched = g.get("guidance_schedule")
  text = f"{sched[0]:g}..{sched[-1]:g} per step" if sched else f"{s.guidance_scale:g}"
  if g.get("guidance_rescale"):
    text += f", rescale {g['guidance_rescale']:g}"
  if g.get("guidance_interval"):
    lo, hi = g["guidance_interval"]
    text += f" in [{lo:g}, {hi:g}]"
  return text


def _describe(plan: RunPlan, step: int, survey: _Survey, batch: int) -> str:
  """The line announcing the run."""
  s = plan.settings
  parts = [f"{s.method} (NFE {s.nfe}" + (f", guidance {_guidance_summary(s)}" if s.guided else "") + ")"]
  parts.append(f"labels {labels_summary(s.labels)}")
  if s.context:
    parts.append(f"context {s.context}")
  if s.inpaint:
    parts.append(f"inpainting {s.inpaint['mask']} of {s.inpaint['source']}")
  if s.cond_source:
    parts.append(f"conditioned on {s.cond_source['source']}")
  parts.append(f"seed {s.seed}")
  where = f"{jax.device_count()} device(s), {jax.process_count()} process(es)"
  if survey.todo:
    where += f", batch {batch} per process"
  done = len(survey.mine) - len(survey.todo)
  return (
    f"jaxdiff sample: {s.num_samples} samples of {s.kind} {list(s.data_shape)} from checkpoint step {step} "
    f"({s.params} params), " + ", ".join(parts) + f"; {where}; "
    f"{done} of {len(survey.mine)} shard(s) of this process already complete -> {plan.output}"
  )


class _Counts(NamedTuple):
  generated: int = 0
  generation_s: float = 0.0
  nonfinite: int = 0
  compile_s: float = 0.0


def _padded_batches(index: np.ndarray, labels: np.ndarray, batch: int):
  """(valid, index, labels) of each batch; the last is padded with copies of its last sample."""
  for off in range(0, len(index), batch):
    idx, lab = index[off : off + batch], labels[off : off + batch]
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


def _generate_shards(
  plan: RunPlan, restored: _Restored, survey: _Survey, batch: int, tag: str, progress: bool
):
  """Generate and write this process's missing shards on its local devices; returns _Counts."""
  s = plan.settings
  devices = jax.local_devices()
  extra_spec = None
  if not plan.conditions.empty:
    probe = plan.conditions.arrays(np.zeros(1, np.int64))
    extra_spec = {k: (v.shape[1:], v.dtype) for k, v in probe.items()}
  mesh = parallel.create_mesh(devices, _sampling_fsdp(restored.config, len(devices)))
  data = parallel.data_sharding(mesh)
  dev_params = jax.device_put(
    restored.params,
    parallel.fsdp_sharding(restored.params, mesh, int(restored.config.parallel.fsdp_min_size)),
  )
  index_all = np.concatenate([np.arange(a, b, dtype=np.int32) for a, b in survey.todo])
  t0 = time.perf_counter()
  compiled = _compiled(
    restored.config, restored.model, restored.schedule, s, batch, mesh, dev_params, extra_spec
  )
  compile_s = time.perf_counter() - t0

  work = survey.work
  done_before = sum(e - b for b, e in survey.mine) - work
  pbar = tqdm(
    total=done_before + work,
    initial=done_before,
    disable=not (jax.process_index() == 0 and progress),
    unit="sample",
    dynamic_ncols=True,
    mininterval=1.0,
    desc="sampling",
  )
  writer = _ShardWriter(
    plan.output,
    survey.todo,
    s.kind,
    s.labels_of,
    tag,
    lambda a, b: _remove_superseded(plan.output, a, b),
    shard_run(restored.manifest),
  )
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
    writer.add(images.to_uint8(x) if s.kind == "images" else x.astype(np.float32))
    generated += valid
    pbar.update(valid)

  t0 = time.perf_counter()
  inflight: collections.deque = collections.deque()
  try:
    for valid, idx, lab in _padded_batches(index_all, s.labels_of(index_all), batch):
      extra = (
        []
        if not extra_spec
        else [{k: jax.device_put(v, data) for k, v in plan.conditions.arrays(idx).items()}]
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
  return _Counts(generated, time.perf_counter() - t0, nonfinite, compile_s)


def _all_processes(counts: _Counts, survey: _Survey) -> dict:
  """Totals over every process (one barrier): generated, generation_s (the slowest), nonfinite,
  reused, regenerated."""
  local = [counts.generated, counts.generation_s, counts.nonfinite, survey.reused, len(survey.regenerated)]
  if jax.process_count() == 1:
    rows = np.asarray([local], np.float64)
  else:
    rows = np.asarray(multihost_utils.process_allgather(np.array(local, np.float32)))
    rows = rows.reshape(jax.process_count(), -1).astype(np.float64)
  return {
    "generated": int(rows[:, 0].sum()),
    "generation_s": float(rows[:, 1].max()),
    "nonfinite": int(rows[:, 2].sum()),
    "reused": int(rows[:, 3].sum()),
    "regenerated": int(rows[:, 4].sum()),
  }


def _save_figures(plan: RunPlan, restored: _Restored) -> dict:
  """grid.png (images) or scatter.png (points) of the first samples: {"grid" | "scatter": file}."""
  s, shards = plan.settings, plan.shards
  if s.kind == "images":
    x, lab = _first_samples(plan.output, shards, s.kind, plan.grid_size)
    if x is None:
      return {}
    path = os.path.join(plan.output, GRID)
    figures.save_grid(x, lab, path, s.num_classes, s.labels == "uniform", plan.grid_size)
    return {"grid": GRID}
  x, _ = _first_samples(plan.output, shards, s.kind, SCATTER_POINTS)
  if x is None or x.shape[1] < 2:
    return {}
  title = f"{len(x)} samples, {s.method}, step {restored.step}"
  figures.save_points(x, os.path.join(plan.output, SCATTER), str(restored.config.data.name), title)
  return {"scatter": SCATTER}


def _previous_runs(path: str) -> list[dict]:
  """The invocations recorded in an earlier summary.json (resumed or re-verified runs)."""
  if not fileio.exists(path):
    return []
  try:
    return list(_read_json(path).get("runs", []))
  except (OSError, ValueError, AttributeError):
    return []


def generate(
  workdir: str,
  output: str | None = None,
  *,
  num_samples: int,
  sampler: str | None = None,
  num_steps: int | None = None,
  eta: float | None = None,
  spacing: str | None = None,
  clip_x0: float | None = None,
  guidance_scale: float | None = None,
  labels: Any = None,
  seed: int = 0,
  batch_size: int | None = None,
  shard_size: int = 1000,
  params: str = "ema",
  checkpoint_step: int | None = None,
  trajectory: bool = False,
  grid_size: int = 100,
  progress: bool = True,
  inpaint_source: str | None = None,
  inpaint_mask: str | None = None,
  repaint_resample: int = 1,
  repaint_jump: int = 1,
  paste_known: bool = True,
  context: str | None = None,
  cond_source: str | None = None,
  grid_options: dict | None = None,
  guidance_options: dict | None = None,
) -> dict:
  """Generate `num_samples` samples of the model trained in `workdir` into `output` (resumable).

  Args:
    workdir: a training workdir (config.json and checkpoints/).
    output: the sample folder (default workdir/generated).
    sampler, num_steps, eta, spacing, clip_x0, guidance_scale: default config.sample's (eta: the
      config's for the config's sampler, else the sampler's own default).
    labels: class-conditional models: None / "uniform" (sample i gets class i % num_classes),
      a class, a list of classes (cycled) or "none" (the null class); unconditional models: None.
    seed: sample i uses the key fold_in(jax.random.key(seed), i).
    batch_size: samples per compiled call over all processes (default config.sample.batch_size),
      rounded up to a multiple of each process's device count. Does not change the samples.
    shard_size: samples per .npz file (part of the run: resuming needs the same value).
    params: "ema" or "raw" weights; checkpoint_step: default the newest readable checkpoint
      (or, when resuming, the step the run started with).
    trajectory: also write trajectory.png, the reverse process of the first samples.
    grid_size: samples in grid.png (images).
    inpaint_source, inpaint_mask: inpainting (`jaxdiff.bulk.conditions`): sample i completes
      source image i mod N, keeping the region where the mask is 1; repaint_resample /
      repaint_jump: RePaint resampling; paste_known: the known region of the output is the source.
    context: cross-attention models: "uniform" (the 60 digit captions, cycled), "none", a caption,
      captions separated by ";" or a .npy file (default "uniform" for caption models).
    grid_options: the sampling grid and sampler options that override config.sample's: grid
      ("karras" | "logsnr" | "uniform" | "flow" | a chain's spacing), rho, shift, sigma_min,
      sigma_max, order (unipc), s_churn (euler / heun); None values are the config's.
    guidance_options: guidance_rescale (phi), guidance_interval ("lo,hi" in the process's time) and
      guidance_schedule ("linear:a,b", "cosine:a,b" or a scale per step); None values the config's.
    cond_source: image-conditioned models: the source images ("digits_test" by default for
      digits) whose config.data.cond transform is the conditioning image (or a .npz of "x_cond").

  Returns the summary dict (also written to output/summary.json by process 0).
  Raises SamplingError for anything the user can fix; nothing in `output` is touched then.
  """
  t_start = time.perf_counter()
  plan = plan_run(
    workdir,
    output,
    batch_size=batch_size,
    checkpoint_step=checkpoint_step,
    grid_size=grid_size,
    num_samples=num_samples,
    sampler=sampler,
    num_steps=num_steps,
    eta=eta,
    spacing=spacing,
    clip_x0=clip_x0,
    guidance_scale=guidance_scale,
    labels=labels,
    seed=seed,
    shard_size=shard_size,
    params=params,
    inpaint_source=inpaint_source,
    inpaint_mask=inpaint_mask,
    repaint_resample=repaint_resample,
    repaint_jump=repaint_jump,
    paste_known=paste_known,
    context=context,
    cond_source=cond_source,
    grid_options=grid_options,
    guidance_options=guidance_options,
  )
  setup_compilation_cache(str(plan.config.train.compilation_cache_dir))
  restored = _restore(plan)
  processes, process = jax.process_count(), jax.process_index()
  main, tag = process == 0, f"p{process}"
  fileio.makedirs(plan.output, exist_ok=True)
  if plan.previous is None or plan.previous.get("num_samples") != restored.manifest["num_samples"]:
    _write_json(os.path.join(plan.output, MANIFEST), restored.manifest, tag)

  survey = _survey(plan, process, processes, progress, shard_run(restored.manifest))
  batch = _round_up(
    max(1, min(math.ceil(plan.batch_size / processes), survey.work)), jax.local_device_count()
  )
  if main and progress:
    print(_describe(plan, restored.step, survey, batch), flush=True)
  counts = _generate_shards(plan, restored, survey, batch, tag, progress) if survey.todo else _Counts()
  totals = _all_processes(counts, survey)
  if totals["nonfinite"]:
    log.warning("%d sample(s) contained NaN/Inf (images: stored as black pixels).", totals["nonfinite"])
  record = _run_record(totals, counts.compile_s, batch if survey.todo else None)
  if not main:
    record["wall_time_s"] = round(time.perf_counter() - t_start, 3)
    summary = _summary(plan, restored)
    summary.update(record, generated_this_run=totals["generated"], runs=[record])
    return summary
  summary = _summary(plan, restored)
  summary.update(_save_figures(plan, restored))
  if trajectory:
    summary["trajectory"] = _save_trajectory(
      restored.config,
      restored.model,
      restored.schedule,
      restored.params,
      plan.settings,
      plan.output,
      plan.conditions,
    )
  record["wall_time_s"] = round(time.perf_counter() - t_start, 3)
  _write_summary(plan, summary, record, totals, tag)
  if progress:
    print(_done_line(summary, record, totals, counts.compile_s), flush=True)
  return summary


def _run_record(totals: dict, compile_s: float, batch: int | None) -> dict:
  """This invocation's entry of summary.json's "runs" (wall_time_s filled in at the end)."""
  generated, seconds = totals["generated"], totals["generation_s"]
  return {
    "devices": jax.device_count(),
    "processes": jax.process_count(),
    "batch_size_per_process": batch,
    "generated": generated,
    "reused_samples": totals["reused"],
    "regenerated_shards": totals["regenerated"],
    "nonfinite_samples": totals["nonfinite"],
    "compile_s": round(compile_s, 3),
    "generation_s": round(seconds, 3),
    "samples_per_s": round(generated / seconds, 3) if generated and seconds > 0 else None,
    "wall_time_s": None,
  }


def _summary(plan: RunPlan, restored: _Restored) -> dict:
  """The run's manifest with the folder's state: files, how many are present, complete."""
  files = [shard_name(s, e) for s, e in plan.shards]
  present = sum(fileio.exists(os.path.join(plan.output, f)) for f in files)
  summary = {k: v for k, v in restored.manifest.items() if k != "format"}
  summary.update(
    format=MANIFEST_FORMAT,
    output=plan.output,
    labels=labels_summary(plan.settings.labels),
    files=files,
    files_present=present,
    complete=present == len(files),
  )
  return summary


# The headline figures of summary.json are those of the latest invocation that generated samples.
_HEADLINE = ("devices", "processes", "batch_size_per_process", "compile_s", "generation_s", "samples_per_s")


def _write_summary(plan: RunPlan, summary: dict, record: dict, totals: dict, tag: str) -> None:
  path = os.path.join(plan.output, SUMMARY)
  runs = _previous_runs(path) + [record]
  latest = next((r for r in reversed(runs) if r.get("generated")), record)
  summary.update({k: latest.get(k) for k in _HEADLINE})
  summary.update(
    generated_this_run=totals["generated"],
    reused_samples=totals["reused"],
    regenerated_shards=totals["regenerated"],
    wall_time_s=record["wall_time_s"],
    runs=runs,
  )
  _write_json(path, summary, tag)


def _done_line(summary: dict, record: dict, totals: dict, compile_s: float) -> str:
  rate = (
    f"{record['samples_per_s']:.1f} samples/s, compile {compile_s:.1f}s"
    if record["samples_per_s"]
    else "nothing left to generate"
  )
  return (
    f"jaxdiff sample: done: {summary['files_present']}/{len(summary['files'])} shard(s) in {summary['output']}; "
    f"{totals['generated']} generated now ({rate}), {totals['reused']} reused, "
    f"{totals['regenerated']} shard(s) regenerated; wall {record['wall_time_s']:.1f}s"
  )


def _save_trajectory(
  config,
  model,
  schedule,
  host_params,
  settings: RunSettings,
  output: str,
  conditions: Conditions | None = None,
) -> str:
  """trajectory.png for the first samples (the same keys, labels and conditioning as the shards)."""
  n = min(settings.num_samples, TRAJECTORY_SAMPLES[settings.kind])
  fn = perf.jit(make_batch_fn(config, model, schedule, settings, trajectory=True))
  idx = np.arange(n, dtype=np.int32)
  extra = conditions.arrays(idx) if conditions is not None and not conditions.empty else None
  _, xs, x0s = fn(host_params, idx, settings.labels_of(idx), extra)
  ts = grid_times(config, settings)
  title = f"reverse process, {settings.method}, seed {settings.seed}" + (
    f", labels {labels_summary(settings.labels)}" if settings.conditional else ""
  )
  figures.save_trajectory(
    np.asarray(xs), np.asarray(x0s), ts, os.path.join(output, TRAJECTORY), settings.kind, title
  )
  return TRAJECTORY
