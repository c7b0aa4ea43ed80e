"""`generate(workdir, output, SampleRequest(num_samples=...))`: bulk sampling of a trained model, resumable, on every device.

Determinism. Sample i is drawn with the key `fold_in(key(seed), i)` and its label is a function of
i alone (`labels_for`). Each sample runs its own `jaxdiff.sample` call of batch 1 (via
`config_sampling.sample_from_config`), `jax.vmap`-ed over the keys and labels of a batch, so its
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
different run into the same folder is an error, and so is a second run into a folder another run
is writing (`folder.OutputLock`, taken before run.json is written). Samples with NaN or Inf (a diverged model) are
never written: the run stops with a SamplingError before the shard that would hold them. A larger
--num_samples extends a run (its partial last shard is replaced by a full one); a smaller one is
an error. Where a run spends its time: `plan` (settings checked), `folder` (the output folder),
`batches` (the compiled sampler and the shard loop), this module (the run from start to summary).
"""

from __future__ import annotations

import logging
import math
import os
import time
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils

from jaxdiff import figures, fileio, perf
from jaxdiff.bulk.batches import Counts, generate_shards, make_batch_fn
from jaxdiff.bulk.condition_tables import Conditions
from jaxdiff.bulk.folder import (
  LATENTS_DIR,
  MANIFEST,
  SUMMARY,
  OutputLock,
  Survey,
  default_output,
  existing_manifest,
  first_samples,
  read_json,
  shard_run,
  survey,
  unwritable,
  write_json,
)
from jaxdiff.bulk.plan import Restored, RunPlan, plan_run, restore_plan
from jaxdiff.bulk.request import SampleRequest
from jaxdiff.bulk.sampler_options import grid_times
from jaxdiff.bulk.settings import (
  MANIFEST_FORMAT,
  RunSettings,
  compare_manifest,
  labels_summary,
)
from jaxdiff.errors import USER_ERRNOS
from jaxdiff.shards import shard_name

__all__ = ["generate", "plan_run", "RunPlan", "make_batch_fn", "default_output", "shard_run", "SampleRequest"]

log = logging.getLogger("jaxdiff.sample")

GRID, SCATTER, TRAJECTORY = "grid.png", "scatter.png", "trajectory.png"
SCATTER_POINTS = 5000  # samples in scatter.png (2-D data)
TRAJECTORY_SAMPLES = {"images": 8, "points": 1000}  # samples in trajectory.png, by kind


def _round_up(n: int, k: int) -> int:
  return -(-n // k) * k


def generate(
  workdir: str, output: str | None = None, request: SampleRequest | None = None, **choices: Any
) -> dict:
  """Generate `request.num_samples` samples of the model trained in `workdir` into `output`
  (default workdir/generated); running it again resumes.

  `request`: a `SampleRequest` (every field None = config.sample's), or its fields as keywords
  (num_samples=..., sampler=..., grid_options={...}, guidance_options={...}: `SampleRequest.from_kwargs`).
  Returns the summary dict (also written to output/summary.json by process 0).
  Raises SamplingError for anything the user can fix; nothing in `output` is touched then.
  """
  t_start = time.perf_counter()
  plan = plan_run(workdir, output, request, **choices)
  restored = restore_plan(plan)
  process = jax.process_index()
  created = not fileio.isdir(plan.output)
  lock = OutputLock(plan.output) if process == 0 else None
  try:
    if lock is not None:
      lock.acquire()
    else:
      fileio.makedirs(plan.output, exist_ok=True)
    return _run(plan, restored, t_start)
  except OSError as e:
    if e.errno not in USER_ERRNOS:
      raise
    raise unwritable(plan.output, e) from None
  finally:
    if lock is not None:
      lock.release()
      if created and fileio.isdir(plan.output) and not fileio.listdir(plan.output):
        fileio.rmtree(plan.output)  # nothing was written: leave no empty folder behind


def _start_run(plan: RunPlan, restored: Restored, tag: str) -> None:
  """Check the folder again under the lock (another run may have written it since the plan) and
  write the run's manifest before any shard."""
  now = existing_manifest(plan.output)
  if now is not None:
    compare_manifest(now, restored.manifest, plan.output)
  if now is None or now.get("num_samples") != restored.manifest["num_samples"]:
    write_json(os.path.join(plan.output, MANIFEST), restored.manifest, tag)


def _run(plan: RunPlan, restored: Restored, t_start: float) -> dict:
  """The run inside its folder: manifest, shards, counts over every process, figures, summary."""
  processes, process = jax.process_count(), jax.process_index()
  main, tag, progress = process == 0, f"p{process}", plan.request.progress
  _start_run(plan, restored, tag)
  found = survey(plan.output, plan.shards, plan.settings, restored.shard_run, process, processes, progress)
  batch = _round_up(max(1, min(math.ceil(plan.batch_size / processes), found.work)), jax.local_device_count())
  if main and progress:
    print(_describe(plan, restored.step, found, batch), flush=True)
  counts = Counts()
  if found.todo:
    counts = generate_shards(
      plan.output, plan.settings, plan.conditions, restored, found, batch, tag, progress
    )
  totals = _all_processes(counts, found)
  if totals["nonfinite"]:
    log.warning("%d sample(s) contained NaN/Inf (images: stored as black pixels).", totals["nonfinite"])
  record = _run_record(totals, counts.compile_s, batch if found.todo else None)
  summary = _summary(plan, restored)
  if not main:
    record["wall_time_s"] = round(time.perf_counter() - t_start, 3)
    summary.update(record, generated_this_run=totals["generated"], runs=[record])
    return summary
  summary.update(_save_figures(plan, restored))
  if plan.request.trajectory:
    summary["trajectory"] = _save_trajectory(restored, plan.settings, plan.output, plan.conditions)
  record["wall_time_s"] = round(time.perf_counter() - t_start, 3)
  _write_summary(plan, summary, record, totals, tag)
  if progress:
    print(_done_line(summary, record, totals, counts.compile_s), flush=True)
  return summary


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


def _describe(plan: RunPlan, step: int, survey: Survey, batch: int) -> str:
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
  if s.latent:
    parts.append(
      f"latents {s.latent['latent_shape']} decoded by {s.latent['vae']}"
      + (f" (latents kept in {os.path.join(plan.output, LATENTS_DIR)})" if s.keep_latents else "")
    )
  where = f"{jax.device_count()} device(s), {jax.process_count()} process(es)"
  if survey.todo:
    where += f", batch {batch} per process"
  done = len(survey.mine) - len(survey.todo)
  return (
    f"jaxdiff sample: {s.num_samples} samples of {s.kind} {list(s.data_shape)} from checkpoint step {step} "
    f"({s.params} params), " + ", ".join(parts) + f"; {where}; "
    f"{done} of {len(survey.mine)} shard(s) of this process already complete -> {plan.output}"
  )


def _all_processes(counts: Counts, survey: Survey) -> dict:
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


def _save_figures(plan: RunPlan, restored: Restored) -> dict:
  """grid.png (images) or scatter.png (points) of the first samples: {"grid" | "scatter": file}."""
  s, shards = plan.settings, plan.shards
  if s.kind == "images":
    if s.data_shape[-1] not in (1, 3):  # latents and other channel counts are no picture
      return {}
    x, lab = first_samples(plan.output, shards, s.kind, plan.grid_size)
    if x is None:
      return {}
    path = os.path.join(plan.output, GRID)
    figures.save_grid(x, lab, path, s.num_classes, s.labels == "uniform", plan.grid_size)
    return {"grid": GRID}
  x, _ = first_samples(plan.output, shards, s.kind, SCATTER_POINTS)
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
    return list(read_json(path).get("runs", []))
  except (OSError, ValueError, AttributeError):
    return []


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


def _summary(plan: RunPlan, restored: Restored) -> dict:
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
  write_json(path, summary, tag)


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
  restored: Restored, settings: RunSettings, output: str, conditions: Conditions | None = None
) -> str:
  """trajectory.png for the first samples (the same keys, labels and conditioning as the shards)."""
  n = min(settings.num_samples, TRAJECTORY_SAMPLES[settings.kind])
  fn = perf.jit(make_batch_fn(restored.config, restored.model, restored.schedule, settings, trajectory=True))
  idx = np.arange(n, dtype=np.int32)
  extra = conditions.arrays(idx) if conditions is not None and not conditions.empty else None
  _, xs, x0s = fn(restored.params, idx, settings.labels_of(idx), extra)
  ts = grid_times(restored.config, settings)
  title = f"reverse process, {settings.method}, seed {settings.seed}" + (
    f", labels {labels_summary(settings.labels)}" if settings.conditional else ""
  )
  figures.save_trajectory(
    np.asarray(xs), np.asarray(x0s), ts, os.path.join(output, TRAJECTORY), settings.kind, title
  )
  return TRAJECTORY
