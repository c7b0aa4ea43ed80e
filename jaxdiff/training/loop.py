"""The training loop: `train(config, workdir)`: resume, step, log, sample, checkpoint, stop cleanly.

One compiled step over the data mesh; the host only feeds batches and, every log_every steps,
reads back metrics (the only device->host sync besides checkpoints and sample grids).
"""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import threading
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxdiff import parallel, perf
from jaxdiff.config_utils import check_training_conditioning, schedule_from_config, validate_config
from jaxdiff.training.checkpoints import Checkpointer, save_config
from jaxdiff.training.state import create_train_state
from jaxdiff.training.step import make_multi_step, make_train_step

__all__ = ["train", "TrainingError", "NonFiniteLossError", "WorkdirError", "setup_compilation_cache"]

log = logging.getLogger("jaxdiff.train")


class TrainingError(RuntimeError):
  """A training run that cannot go on; the message says why and what to do."""


class NonFiniteLossError(TrainingError):
  pass


class WorkdirError(TrainingError):
  pass


def setup_compilation_cache(cache_dir: str) -> str | None:
  """Persistent XLA compilation cache, so a restarted run skips most of the compile."""
  if cache_dir == "none":
    return None
  cache_dir = cache_dir or os.path.join(os.path.expanduser("~"), ".cache", "jaxdiff", "xla")
  try:
    os.makedirs(cache_dir, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", cache_dir)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
  except Exception as e:  # an unwritable cache only costs compile time
    log.warning("Compilation cache disabled (%s).", e)
    return None
  return cache_dir


def _check_workdir(workdir: str) -> None:
  try:
    os.makedirs(workdir, exist_ok=True)
    probe = os.path.join(workdir, f".write_test_{os.getpid()}")
    with open(probe, "w") as f:
      f.write("ok")
    os.remove(probe)
  except OSError as e:
    raise WorkdirError(
      f"Cannot write to workdir {workdir!r} ({e.strerror or e}). Pass a --workdir you can "
      "write to (a local folder or a gs:// path on TPU VMs)."
    ) from None


class _MetricWriter:
  """Metrics as JSON lines (workdir/metrics.jsonl) and TensorBoard events (workdir/tensorboard)."""

  def __init__(self, workdir: str, enabled: bool):
    self.enabled = enabled
    self._tb = None
    if enabled:
      self._path = os.path.join(workdir, "metrics.jsonl")
      try:
        from tensorboardX import SummaryWriter

        self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))
      except Exception as e:  # TensorBoard is a convenience; the JSON lines are the record
        log.warning("TensorBoard writer unavailable (%s); metrics go to metrics.jsonl only.", e)

  def write(self, step: int, scalars: dict[str, float]) -> None:
    if not self.enabled:
      return
    with open(self._path, "a") as f:
      f.write(json.dumps({"step": step, **{k: float(v) for k, v in scalars.items()}}) + "\n")
    if self._tb is not None:
      for k, v in scalars.items():
        self._tb.add_scalar(k, float(v), step)

  def write_image(self, step: int, tag: str, path: str) -> None:
    if self._tb is None:
      return
    try:
      from PIL import Image

      img = np.asarray(Image.open(path).convert("RGB"))
      self._tb.add_image(tag, img, step, dataformats="HWC")
    except Exception:
      pass

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()


class _Preemption:
  """SIGTERM sets a flag; the loop finishes the current step, saves and exits 0."""

  def __init__(self):
    self.requested = False
    self._old = None

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      self._old = signal.signal(signal.SIGTERM, self._handle)
    return self

  def _handle(self, signum, frame):
    self.requested = True
    log.warning("SIGTERM received: finishing the current step, saving a checkpoint, then exiting.")

  def __exit__(self, *exc):
    if self._old is not None:
      signal.signal(signal.SIGTERM, self._old)


def _stack(batches: list[dict]) -> dict:
  return {k: np.stack([b[k] for b in batches]) for k in batches[0]}


def train(config: ml_collections.ConfigDict, workdir: str, *, stop_at_step: int | None = None) -> Any:
  """Train (or resume) the model `config` describes, writing everything under `workdir`.

  Resumes from the newest readable checkpoint in workdir/checkpoints. Stops at
  config.train.num_steps (or earlier at `stop_at_step`, as a test of interruption), on SIGTERM
  (after saving), or with NonFiniteLossError. Returns the final TrainState.
  """
  from jaxdiff import data as data_lib
  from jaxdiff.models import count_params, create_model

  validate_config(config)
  check_training_conditioning(config)
  workdir = os.path.abspath(workdir)
  _check_workdir(workdir)
  main = parallel.is_main_process()
  cache = setup_compilation_cache(str(config.train.compilation_cache_dir))

  mesh = parallel.create_mesh()
  t_cfg = config.train
  global_batch = int(t_cfg.batch_size)
  per_device = parallel.check_global_batch(global_batch, mesh)
  if global_batch % jax.process_count():
    raise ValueError(
      f"config.train.batch_size={global_batch} must divide over {jax.process_count()} processes."
    )
  k = int(t_cfg.steps_per_dispatch)
  if k > 1 and jax.default_backend() == "cpu":
    log.warning(
      "config.train.steps_per_dispatch=%d on CPU: XLA:CPU (jax %s) runs convolution "
      "gradients inside a scanned loop 25-120x slower than at top level "
      "(benchmarks/bench_scan_conv.py); steps_per_dispatch=1 is much faster here.",
      k,
      jax.__version__,
    )
  repl = parallel.replicated(mesh)
  batch_sharding = parallel.data_sharding(mesh, leading_axes=1 if k > 1 else 0)

  info = data_lib.dataset_info(config)  # validates the data fields before any compile
  eval_every = int(config.eval.get("every", 0) or 0)
  if eval_every:
    from jaxdiff.evaluation import check_eval_config

    check_eval_config(config)
  model = create_model(config)
  schedule = schedule_from_config(config)
  seed = int(config.seed)
  # keys are made inside jit so that they are global arrays on every process
  state = jax.jit(
    lambda: create_train_state(config, model, jax.random.split(jax.random.key(seed))[0]), out_shardings=repl
  )()
  step_key = jax.jit(lambda: jax.random.split(jax.random.key(seed))[1], out_shardings=repl)()
  ckpt = Checkpointer(workdir, keep=int(t_cfg.keep_checkpoints))
  state, restored_step = ckpt.restore(state)
  step = int(parallel.fetch(state.step))
  if main:
    save_config(config, workdir)
  n_params = count_params(state.params)
  num_steps = int(t_cfg.num_steps)
  end_step = num_steps if stop_at_step is None else min(num_steps, int(stop_at_step))
  msg = (
    f"jaxdiff train: {jax.device_count()} device(s) ({jax.devices()[0].platform}), "
    f"{jax.process_count()} process(es), global batch {global_batch}, per-device batch {per_device}, "
    f"{n_params:,} parameters, data {info.name} {tuple(info.shape)}, "
    + (f"resumed at step {step}" if restored_step is not None else "new run")
    + f", {num_steps} steps, workdir {workdir}"
  )
  if main:
    print(msg, flush=True)
  log.info(msg)

  train_step = make_multi_step(make_train_step(config, model, schedule), k)
  jitted = jax.jit(
    train_step,
    in_shardings=(repl, batch_sharding, repl),
    out_shardings=(repl, repl),
    donate_argnums=(0,),
    compiler_options=perf.cpu_compiler_options() or None,
  )
  ds = data_lib.create_dataset(config, start_step=step)

  def next_batch():
    if k == 1:
      return parallel.to_global(next(ds), batch_sharding)
    return parallel.to_global(_stack([next(ds) for _ in range(k)]), batch_sharding)

  writer = _MetricWriter(workdir, main)
  pending: list[tuple[int, dict]] = []
  last_saved = restored_step
  compile_s = None
  # every process runs the sampler (its arrays span all processes); only process 0 writes
  sample_fn = _make_sampler(config, model, schedule, workdir, info, main) if t_cfg.sample_every else None
  t_window, steps_window = time.perf_counter(), 0
  pbar = _progress(step, num_steps, main)
  t_start = time.perf_counter()
  stopped_by_signal = False

  def flush_metrics(current: int) -> dict[str, float]:
    """Fetch pending per-step metrics; raise on a non-finite loss (policy 'stop')."""
    nonlocal pending
    if not pending:
      return {}
    fetched = parallel.fetch([m for _, m in pending])
    first_steps = [s for s, _ in pending]
    pending = []
    rows = []
    for s0, m in zip(first_steps, fetched):
      losses = np.atleast_1d(m["loss"])
      for j in range(losses.shape[0]):
        row = {kk: float(np.atleast_1d(v)[j]) for kk, v in m.items()}
        rows.append((s0 + j, row))
    if t_cfg.nan_policy == "stop":
      for s, row in rows:
        if not math.isfinite(row["loss"]):
          raise NonFiniteLossError(
            f"The loss became {row['loss']} at step {s + 1}. Training stopped; the last good checkpoint "
            f"({'step ' + str(last_saved) if last_saved is not None else 'none yet'}) in {ckpt.directory} is "
            "intact. Lower config.optim.learning_rate, check the data, or set "
            "--config.train.nan_policy=skip to skip such updates."
          )
    keys = rows[-1][1].keys()
    mean = {kk: float(np.mean([r[kk] for _, r in rows])) for kk in keys}
    mean["nonfinite"] = float(sum(r["nonfinite"] for _, r in rows))
    return mean

  try:
    with _Preemption() as preempt:
      if step < end_step:
        batch = next_batch()
        t0 = time.perf_counter()
        compiled = jitted.lower(state, batch, step_key).compile()
        compile_s = time.perf_counter() - t0
        if main:
          pbar.write(f"first step compiled in {compile_s:.1f}s (compilation cache: {cache or 'off'})")
        writer.write(step, {"compile_seconds": compile_s})
      while step < end_step:
        state, metrics = compiled(state, batch, step_key)
        pending.append((step, metrics))
        step += k
        steps_window += k
        pbar.update(k)
        at_end = step >= end_step
        if step % t_cfg.log_every == 0 or at_end:
          scalars = flush_metrics(step)
          dt = time.perf_counter() - t_window
          scalars["steps_per_sec"] = steps_window / dt
          scalars["images_per_sec"] = steps_window * global_batch / dt
          t_window, steps_window = time.perf_counter(), 0
          writer.write(step, scalars)
          pbar.set_postfix(loss=f"{scalars['loss']:.4f}", img_s=f"{scalars['images_per_sec']:.0f}")
        if sample_fn is not None and step % t_cfg.sample_every == 0:
          path = sample_fn(state, step)
          if path:
            writer.write_image(step, "samples", path)
        if eval_every and step % eval_every == 0:
          writer.write(step, _evaluate(config, model, schedule, state))
        if step % t_cfg.checkpoint_every == 0 or at_end or preempt.requested or ckpt.reached_preemption(step):
          flush_metrics(step)
          ckpt.save(state)
          last_saved = step
          if preempt.requested:
            stopped_by_signal = True
            break
        if not at_end:
          batch = next_batch()
  finally:
    pbar.close()
    ckpt.close()
    writer.close()
  elapsed = time.perf_counter() - t_start
  if main:
    how = "stopped by SIGTERM" if stopped_by_signal else "done"
    print(
      f"jaxdiff train: {how} at step {step} in {elapsed:.1f}s"
      + (f" (first-step compile {compile_s:.1f}s)" if compile_s is not None else "")
      + f"; checkpoints in {ckpt.directory}",
      flush=True,
    )
  return state


def _evaluate(config, model, schedule, state) -> dict[str, float]:
  """config.eval's periodic sample-quality figures for the EMA model (every process takes part)."""
  from jaxdiff.evaluation import evaluate_for_training
  from jaxdiff.generation import sample_from_config

  def sample_fn(num, key, labels):
    return parallel.fetch(sample_from_config(config, model, schedule, state.ema_params, key, num, labels))

  return evaluate_for_training(config, sample_fn)


def _progress(step: int, total: int, enabled: bool):
  from tqdm.auto import tqdm

  return tqdm(
    total=total, initial=step, disable=not enabled, unit="step", dynamic_ncols=True, mininterval=1.0
  )


def grid_conditioning(config, n: int) -> tuple[dict, int | None]:
  """The fixed conditioning of the periodic sample grids: (keyword arguments of
  sample_from_config for n samples, images per grid row).

  Class-conditional models: one row per class. Caption models (config.data.cond='caption'): the
  60 digit captions in class-major order (cycled), six per row. Image-conditioned models: the
  first n held-out images' conditioning (the "sr" input of the digits test split, or of the
  first evaluation batch for other data sets).
  """
  import numpy as np

  num_classes = int(config.model.num_classes)
  kwargs: dict = {}
  nrow = None
  if num_classes > 0:
    per_class = max(1, n // num_classes)
    kwargs["labels"] = jnp.repeat(jnp.arange(num_classes), per_class)
    nrow = per_class
    n = len(kwargs["labels"])
  cond = config.data.get("cond", "")
  if int(config.model.get("context_dim", 0)) > 0 and cond == "caption":
    from jaxdiff.data.captions import all_captions

    caps = all_captions()
    kwargs["context"] = jnp.asarray(caps[np.arange(n) % len(caps)])
    nrow = 6
  if int(config.model.get("cond_channels", 0)) > 0:
    from jaxdiff import data as data_lib
    from jaxdiff.data.conditioning import add_conditioning

    split = "test" if config.data.name == "digits" else None
    batch = next(
      iter(data_lib.create_dataset(config, batch_size=n, process_index=0, process_count=1, split=split))
    )
    if "x_cond" not in batch:
      batch = add_conditioning(batch, config.data)
    kwargs["x_cond"] = jnp.asarray(batch["x_cond"])
  return kwargs, nrow


def _make_sampler(config, model, schedule, workdir: str, info, write: bool):
  """Periodic EMA sample grids (one row per class for labelled data, per caption set for caption
  models, the held-out conditioning inputs for image-conditioned ones) or scatter plots for points."""
  from jaxdiff import images
  from jaxdiff.generation import sample_from_config

  out_dir = os.path.join(workdir, "samples")
  if write:
    os.makedirs(out_dir, exist_ok=True)
  n = int(config.train.num_sample_images)
  key = jax.random.key(int(config.seed) + 1)  # the same noise every time: grids are comparable
  cond, nrow = grid_conditioning(config, n) if info.kind != "points" else ({}, None)
  if info.kind == "points" and int(config.model.num_classes) > 0:
    cond = {
      "labels": jnp.repeat(
        jnp.arange(int(config.model.num_classes)), max(1, n // int(config.model.num_classes))
      )
    }
  num = len(cond["labels"]) if "labels" in cond else n
  reference = None
  if info.kind == "points":
    from jaxdiff.data import sample_toy2d

    reference = np.asarray(sample_toy2d(config.data.name.split("/", 1)[1], 2000, 0))

  def run(state, step: int) -> str:
    x = sample_from_config(config, model, schedule, state.ema_params, key, num, **cond)
    x = parallel.fetch(x)
    if not write:
      return None
    if info.kind == "points":
      path = os.path.join(out_dir, f"step_{step:07d}.png")
      images.save_scatter(x, path, reference=reference, title=f"EMA samples, step {step}")
    else:
      path = os.path.join(out_dir, f"step_{step:07d}.png")
      images.save_image_grid(x, path, nrow=nrow)
    return path

  return run
