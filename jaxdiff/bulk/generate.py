"""`generate(workdir, output, num_samples=...)`: bulk sampling of a trained model, resumable, on every device.

Determinism. Sample i is drawn with the key `fold_in(key(seed), i)` and its label is a function of
i alone (`labels_for`). Each sample runs its own `jaxdiff.sample` call of batch 1 (via
`generation.sample_from_config`), `jax.vmap`-ed over the keys and labels of a batch, so its
starting noise and every per-step noise come from its own key: the samples do not depend on the
batch size, the number of devices or processes, or which shards a resumed run had left to do.
Floating point can still differ in the last bits when XLA picks another kernel for another
batch shape or device count: measured on CPU, samples agree to 7e-7 (images in [-1, 1]) and 4e-8
relative (points), so a uint8 pixel can differ by 1 where a value sits on a rounding boundary.

Parallelism. Shards are the unit of work and of output: shard j (samples [j S, (j + 1) S)) belongs
to process j % process_count, which generates it on its own devices (a 1-D "data" mesh over
`jax.local_devices()`, batches split `P("data")`, parameters replicated: the training layout)
and writes it itself. Processes share nothing while they sample (no collective per batch, no
lockstep), so on a shared file system every shard is written exactly once, and with per-host
disks each host holds its own shards. One barrier at the end gathers the counts for the summary.

Resume. The output folder's `run.json` records the run (settings, checkpoint step, a digest of
the parameters). Running again checks every existing shard (`shards.check_shard`) and generates
only the missing or damaged ones; a different run into the same folder is an error. A larger
--num_samples extends a run (its partial last shard is replaced by a full one); a smaller one is
an error.
"""

from __future__ import annotations

import collections
import json
import logging
import math
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxdiff import images, perf
from jaxdiff.bulk import figures
from jaxdiff.bulk.restore import _load_config, params_digest, restore_model
from jaxdiff.bulk.settings import (
  MANIFEST_FORMAT,
  SamplingError,
  compare_manifest,
  labels_for,
  labels_summary,
  resolve_run,
)
from jaxdiff.bulk.shards import (
  check_shard,
  layout,
  parse_shard_name,
  read_shard,
  shard_name,
  temp_name,
  write_shard,
)
from jaxdiff.fileio import atomic_write_bytes

__all__ = ["generate", "make_batch_fn", "default_output"]

log = logging.getLogger("jaxdiff.sample")

MANIFEST = "run.json"
SUMMARY = "summary.json"


def default_output(workdir: str) -> str:
  return os.path.join(os.path.abspath(workdir), "generated")


def make_batch_fn(config, model, schedule, settings: dict, trajectory: bool = False):
  """fn(params, index int32 [B], labels int32 [B], extra=None) -> samples [B, ...] (and trajectories).

  Sample index[b] uses key fold_in(key(seed), index[b]) and class labels[b] (ignored for
  labels "none"); every sample is an independent batch-1 sampling run, vmapped. `extra` holds
  per-sample conditioning arrays, batch first (`Conditions.arrays`): "context", "x_cond", and
  "inpaint_known" with "inpaint_mask" (inpainting with settings["inpaint"]'s RePaint options).
  """
  from jaxdiff.generation import sample_from_config

  conditional = settings["labels"] != "none"
  opts = dict(
    sampler=settings["sampler"],
    num_steps=settings["num_steps"],
    eta=settings["eta"],
    spacing=settings["spacing"],
    clip_x0=settings["clip_x0"],
    guidance_scale=settings["guidance_scale"],
  )
  inpaint = settings.get("inpaint")
  if inpaint:
    opts.update(
      repaint_resample=inpaint["repaint_resample"],
      repaint_jump=inpaint["repaint_jump"],
      paste_known=inpaint["paste_known"],
    )
  seed = settings["seed"]

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


def _compiled(config, model, schedule, settings: dict, batch: int, mesh, dev_params, extra_spec=None):
  """The compiled batch sampler, reused by later calls in this process with the same model, settings,
  batch and devices (the parameters are an argument, so they may differ). `extra_spec`: {name:
  (per-sample shape, dtype)} of the per-sample conditioning arrays, or None."""
  from jaxdiff import parallel

  fields = ("sampler", "num_steps", "eta", "spacing", "clip_x0", "guidance_scale", "seed")
  inpaint = settings.get("inpaint") or {}
  extra_key = tuple(sorted((k, tuple(v[0]), str(v[1])) for k, v in (extra_spec or {}).items()))
  key = (
    config.to_json_best_effort(sort_keys=True),
    tuple(settings[k] for k in fields),
    settings["labels"] != "none",
    batch,
    tuple(d.id for d in mesh.devices.flat),
    jax.tree_util.tree_structure(dev_params),
    extra_key,
    tuple(inpaint.get(k) for k in ("repaint_resample", "repaint_jump", "paste_known")),
    tuple(sorted(perf.cpu_compiler_options().items())),
  )
  if key in _COMPILED:
    _COMPILED.move_to_end(key)
    return _COMPILED[key]
  repl, data = parallel.replicated(mesh), parallel.data_sharding(mesh)
  arg = jax.ShapeDtypeStruct((batch,), jnp.int32, sharding=data)
  if extra_spec:
    fn = jax.jit(
      make_batch_fn(config, model, schedule, settings),
      in_shardings=(repl, data, data, data),
      out_shardings=data,
    )
    extra = {
      k: jax.ShapeDtypeStruct((batch,) + tuple(shp), dt, sharding=data) for k, (shp, dt) in extra_spec.items()
    }
    compiled = fn.lower(dev_params, arg, arg, extra).compile(
      compiler_options=perf.cpu_compiler_options() or None
    )
  else:
    fn = jax.jit(
      make_batch_fn(config, model, schedule, settings), in_shardings=(repl, data, data), out_shardings=data
    )
    compiled = fn.lower(dev_params, arg, arg).compile(compiler_options=perf.cpu_compiler_options() or None)
  _COMPILED[key] = compiled
  while len(_COMPILED) > _COMPILED_MAX:
    _COMPILED.popitem(last=False)
  return compiled


def _read_json(path: str) -> dict:
  with open(path) as f:
    return json.load(f)


def _write_json(path: str, obj: dict, tag: str) -> None:
  atomic_write_bytes(
    path,
    (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode(),
    tmp_name=temp_name(os.path.basename(path), tag),
  )


def _existing_manifest(output: str) -> dict | None:
  """The folder's manifest, None for a new or empty folder; SamplingError for anything else."""
  if os.path.exists(output) and not os.path.isdir(output):
    raise SamplingError(f"--output={output} is a file, not a folder.")
  if not os.path.isdir(output):
    return None
  path = os.path.join(output, MANIFEST)
  if not os.path.exists(path):
    foreign = [e for e in os.listdir(output) if not (e.startswith(".") and e.endswith(".tmp"))]
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

  def __init__(self, output: str, todo: list[tuple[int, int]], kind: str, labels_of, tag: str, on_shard):
    self.output, self.kind, self.labels_of, self.tag, self.on_shard = output, kind, labels_of, tag, on_shard
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
        self.output, start, end, self.kind, allx[:n], self.labels_of(np.arange(start, end)), tag=self.tag
      )
      self.written.append(shard_name(start, end))
      self.on_shard(start, end)


def _remove_superseded(output: str, start: int, end: int) -> list[str]:
  """Delete shards that start where the complete shard [start, end) starts but end elsewhere (the
  partial last shard of a run that was later extended)."""
  removed = []
  for name in os.listdir(output):
    r = parse_shard_name(name)
    if r is not None and r[0] == start and r[1] != end:
      os.remove(os.path.join(output, name))
      removed.append(name)
  return removed


def _remove_temps(output: str, mine: set[tuple[int, int]]) -> None:
  """Leftover temporary files of shards this process owns (a run killed while writing)."""
  for name in os.listdir(output):
    if name.startswith(".samples_") and name.endswith(".tmp"):
      r = parse_shard_name(name[1:].rsplit(".", 2)[0])
      if r is not None and r in mine:
        os.remove(os.path.join(output, name))


def _first_samples(output: str, shards: list[tuple[int, int]], kind: str, limit: int):
  """Up to `limit` samples (and labels) from the first shards this process can read."""
  xs, ls, got = [], [], 0
  for s, e in shards:
    path = os.path.join(output, shard_name(s, e))
    if got >= limit:
      break
    if not os.path.exists(path):
      continue
    arrays = read_shard(path)
    xs.append(arrays[kind][: limit - got])
    ls.append(arrays["labels"][: limit - got])
    got += len(xs[-1])
  if not xs:
    return None, None
  return np.concatenate(xs), np.concatenate(ls)


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
    cond_source: image-conditioned models: the source images ("digits_test" by default for
      digits) whose config.data.cond transform is the conditioning image (or a .npz of "x_cond").

  Returns the summary dict (also written to output/summary.json by process 0).
  Raises SamplingError for anything the user can fix; nothing in `output` is touched then.
  """
  from jaxdiff import parallel
  from jaxdiff.training.loop import setup_compilation_cache

  t_start = time.perf_counter()
  workdir = os.path.abspath(workdir)
  config = _load_config(workdir)
  settings, conditions = resolve_run(
    config,
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
  )
  output = os.path.abspath(output) if output else default_output(workdir)
  if grid_size < 1:
    raise SamplingError(f"grid_size={grid_size} must be >= 1.")
  old = _existing_manifest(output)
  if old is not None:
    requested = dict(settings, format=MANIFEST_FORMAT)
    if checkpoint_step is not None:
      requested["checkpoint_step"] = int(checkpoint_step)
    compare_manifest(old, requested, output)  # settings first: fail before restoring anything
    if checkpoint_step is None:
      checkpoint_step = old.get("checkpoint_step")
  batch_size = int(config.sample.batch_size if batch_size is None else batch_size)
  if batch_size < 1:
    raise SamplingError(f"--batch_size={batch_size} must be >= 1.")

  setup_compilation_cache(str(config.train.compilation_cache_dir))
  try:
    config, model, schedule, host_params, step = restore_model(
      workdir, params, checkpoint_step, config=config
    )
  except SamplingError as e:
    if old is not None and checkpoint_step == old.get("checkpoint_step"):
      raise SamplingError(
        f"{e}\nThe run in {output} was started from checkpoint step {checkpoint_step}; it "
        "cannot be resumed without it. Use a new --output."
      ) from None
    raise
  manifest = dict(
    settings,
    format=MANIFEST_FORMAT,
    checkpoint_step=step,
    params_digest=params_digest(host_params),
    workdir=workdir,
  )
  if old is not None:
    compare_manifest(old, manifest, output)

  P, p = jax.process_count(), jax.process_index()
  main = p == 0
  tag = f"p{p}"
  os.makedirs(output, exist_ok=True)
  if old is None or old.get("num_samples") != manifest["num_samples"]:
    _write_json(os.path.join(output, MANIFEST), manifest, tag)

  N, S, kind = settings["num_samples"], settings["shard_size"], settings["kind"]
  shape = tuple(settings["data_shape"])
  num_classes = settings["num_classes"]
  spec = settings["labels"] if isinstance(settings["labels"], str) else tuple(settings["labels"])
  labels_of = lambda idx: labels_for(spec, idx, num_classes)  # noqa: E731
  all_shards = layout(N, S)
  mine = [sh for j, sh in enumerate(all_shards) if j % P == p]
  _remove_temps(output, set(mine))

  # ---- which of this process's shards are complete (checked, not assumed) ----
  todo, regenerated, reused = [], [], 0
  for s, e in mine:
    path = os.path.join(output, shard_name(s, e))
    if os.path.exists(path):
      problem = check_shard(path, s, e, kind, shape, labels_of(np.arange(s, e)))
      if problem is None:
        reused += e - s
        _remove_superseded(output, s, e)
        continue
      log.warning("Shard %s is incomplete or damaged (%s): generating it again.", path, problem)
      if main and progress:
        print(f"jaxdiff sample: {shard_name(s, e)} is damaged ({problem}); generating it again", flush=True)
      regenerated.append(shard_name(s, e))
    todo.append((s, e))
  work = sum(e - s for s, e in todo)

  devices = jax.local_devices()
  n_local = len(devices)
  B = _round_up(max(1, min(math.ceil(batch_size / P), work)), n_local)
  guided = settings["guidance_scale"] != 1.0
  extra_spec = None
  if not conditions.empty:
    probe = conditions.arrays(np.zeros(1, np.int64))
    extra_spec = {k: (v.shape[1:], v.dtype) for k, v in probe.items()}
  if main and progress:
    print(
      f"jaxdiff sample: {N} samples of {kind} {list(shape)} from checkpoint step {step} ({params} params), "
      f"{settings['sampler']}-{settings['num_steps']} (NFE {settings['nfe']}"
      + (f", guidance {settings['guidance_scale']:g}" if guided else "")
      + f"), labels {labels_summary(spec)}"
      + (f", context {settings['context']}" if settings.get("context") else "")
      + (
        f", inpainting {settings['inpaint']['mask']} of {settings['inpaint']['source']}"
        if settings.get("inpaint")
        else ""
      )
      + (f", conditioned on {settings['cond_source']['source']}" if settings.get("cond_source") else "")
      + ", "
      f"seed {settings['seed']}; {jax.device_count()} device(s), {P} process(es)"
      + (f", batch {B} per process" if todo else "")
      + "; "
      f"{len(mine) - len(todo)} of {len(mine)} shard(s) of this process already complete -> {output}",
      flush=True,
    )

  # ---- generate ----
  compile_s, gen_s, generated, nonfinite = 0.0, 0.0, 0, 0
  if todo:
    mesh = parallel.create_mesh(devices)
    repl, data = parallel.replicated(mesh), parallel.data_sharding(mesh)
    dev_params = jax.device_put(host_params, repl)
    index_all = np.concatenate([np.arange(s, e, dtype=np.int32) for s, e in todo])
    label_all = labels_of(index_all)
    t0 = time.perf_counter()
    compiled = _compiled(config, model, schedule, settings, B, mesh, dev_params, extra_spec)
    compile_s = time.perf_counter() - t0

    from tqdm.auto import tqdm

    done_before = sum(e - s for s, e in mine) - work
    pbar = tqdm(
      total=done_before + work,
      initial=done_before,
      disable=not (main and progress),
      unit="sample",
      dynamic_ncols=True,
      mininterval=1.0,
      desc="sampling",
    )
    writer = _ShardWriter(output, todo, kind, labels_of, tag, lambda s, e: _remove_superseded(output, s, e))

    def consume(valid: int, out) -> None:
      nonlocal generated, nonfinite
      x = np.asarray(out)[:valid]
      bad = ~np.isfinite(x.reshape(valid, -1)).all(axis=1)
      nonfinite += int(bad.sum())
      writer.add(images.to_uint8(x) if kind == "images" else x.astype(np.float32))
      generated += valid
      pbar.update(valid)

    t0 = time.perf_counter()
    inflight: collections.deque = collections.deque()
    try:
      for off in range(0, work, B):
        idx, lab = index_all[off : off + B], label_all[off : off + B]
        valid = len(idx)
        if valid < B:  # pad the last batch with copies of its last sample; the copies are dropped
          idx = np.concatenate([idx, np.full(B - valid, idx[-1], np.int32)])
          lab = np.concatenate([lab, np.full(B - valid, lab[-1], np.int32)])
        if extra_spec:
          extra = {k: jax.device_put(v, data) for k, v in conditions.arrays(idx).items()}
          out = compiled(dev_params, jax.device_put(idx, data), jax.device_put(lab, data), extra)
        else:
          out = compiled(dev_params, jax.device_put(idx, data), jax.device_put(lab, data))
        inflight.append((valid, out))
        if len(inflight) > 1:  # keep one batch queued on the devices while the host writes
          consume(*inflight.popleft())
      while inflight:
        consume(*inflight.popleft())
    finally:
      pbar.close()
    gen_s = time.perf_counter() - t0

  # ---- all processes done: totals for the summary ----
  totals = np.array([generated, gen_s, nonfinite, reused, len(regenerated)], np.float32)
  if P > 1:
    from jax.experimental import multihost_utils

    gathered = np.asarray(multihost_utils.process_allgather(totals)).reshape(P, -1)
    generated_all = int(gathered[:, 0].sum())
    gen_s_all = float(gathered[:, 1].max())
    nonfinite_all = int(gathered[:, 2].sum())
    reused_all = int(gathered[:, 3].sum())
    regenerated_all = int(gathered[:, 4].sum())
  else:
    generated_all, gen_s_all, nonfinite_all, reused_all = generated, gen_s, nonfinite, reused
    regenerated_all = len(regenerated)

  files = [shard_name(s, e) for s, e in all_shards]
  present = sum(os.path.exists(os.path.join(output, f)) for f in files)
  record = {
    "devices": jax.device_count(),
    "processes": P,
    "batch_size_per_process": B if todo else None,
    "generated": generated_all,
    "reused_samples": reused_all,
    "regenerated_shards": regenerated_all,
    "nonfinite_samples": nonfinite_all,
    "compile_s": round(compile_s, 3),
    "generation_s": round(gen_s_all, 3),
    "samples_per_s": round(generated_all / gen_s_all, 3) if generated_all and gen_s_all > 0 else None,
    "wall_time_s": None,
  }
  summary = {k: manifest[k] for k in manifest if k != "format"}
  summary.update(
    {
      "format": MANIFEST_FORMAT,
      "output": output,
      "labels": labels_summary(spec),
      "files": files,
      "files_present": present,
      "complete": present == len(files),
    }
  )
  if nonfinite_all:
    log.warning("%d sample(s) contained NaN/Inf (images: stored as black pixels).", nonfinite_all)

  if main:
    if kind == "images":
      x, lab = _first_samples(output, all_shards, kind, grid_size)
      if x is not None:
        figures.save_grid(x, lab, os.path.join(output, "grid.png"), num_classes, spec == "uniform", grid_size)
        summary["grid"] = "grid.png"
    else:
      x, _ = _first_samples(output, all_shards, kind, 5000)
      if x is not None and x.shape[1] >= 2:
        figures.save_points(
          x,
          os.path.join(output, "scatter.png"),
          str(config.data.name),
          f"{len(x)} samples, {settings['sampler']}-{settings['num_steps']}, step {step}",
        )
        summary["scatter"] = "scatter.png"
    if trajectory:
      summary["trajectory"] = _save_trajectory(
        config, model, schedule, host_params, settings, labels_of, output, conditions
      )
    record["wall_time_s"] = round(time.perf_counter() - t_start, 3)
    runs = []
    prev_path = os.path.join(output, SUMMARY)
    if os.path.exists(prev_path):  # the invocations before this one (resumed or re-verified runs)
      try:
        runs = list(_read_json(prev_path).get("runs", []))
      except (OSError, ValueError, AttributeError):
        runs = []
    runs.append(record)
    # the headline throughput is that of the latest invocation that generated samples
    latest = next((r for r in reversed(runs) if r.get("generated")), record)
    summary.update(
      {
        k: latest.get(k)
        for k in (
          "devices",
          "processes",
          "batch_size_per_process",
          "compile_s",
          "generation_s",
          "samples_per_s",
        )
      }
    )
    summary.update(
      generated_this_run=generated_all,
      reused_samples=reused_all,
      regenerated_shards=regenerated_all,
      wall_time_s=record["wall_time_s"],
      runs=runs,
    )
    _write_json(prev_path, summary, tag)
    if progress:
      rate = (
        f"{record['samples_per_s']:.1f} samples/s, compile {compile_s:.1f}s"
        if record["samples_per_s"]
        else "nothing left to generate"
      )
      print(
        f"jaxdiff sample: done: {present}/{len(files)} shard(s) in {output}; {generated_all} generated now "
        f"({rate}), {reused_all} reused, {regenerated_all} shard(s) regenerated; wall {record['wall_time_s']:.1f}s",
        flush=True,
      )
  else:
    record["wall_time_s"] = round(time.perf_counter() - t_start, 3)
    summary.update(record, generated_this_run=generated_all, runs=[record])
  return summary


def _save_trajectory(
  config, model, schedule, host_params, settings: dict, labels_of, output: str, conditions=None
) -> str:
  """trajectory.png for the first samples (the same keys, labels and conditioning as the shards)."""
  n = min(settings["num_samples"], 8 if settings["kind"] == "images" else 1000)
  fn = jax.jit(
    make_batch_fn(config, model, schedule, settings, trajectory=True),
    compiler_options=perf.cpu_compiler_options() or None,
  )
  idx = np.arange(n, dtype=np.int32)
  extra = conditions.arrays(idx) if conditions is not None and not conditions.empty else None
  _, xs, x0s = fn(host_params, idx, labels_of(idx), extra)
  from jaxdiff import samplers

  ts, _ = samplers.step_pairs(
    int(config.diffusion.num_timesteps), settings["num_steps"], settings["spacing"], settings["sampler"]
  )
  title = f"reverse process, {settings['sampler']}-{settings['num_steps']}, seed {settings['seed']}" + (
    f", labels {labels_summary(settings['labels'])}" if settings["labels"] != "none" else ""
  )
  figures.save_trajectory(
    np.asarray(xs), np.asarray(x0s), ts, os.path.join(output, "trajectory.png"), settings["kind"], title
  )
  return "trajectory.png"
