"""The training loop: `train(config, workdir)`: resume, step, log, sample, checkpoint, stop cleanly.

One compiled step over the data mesh; the host only feeds batches and, every log_every steps,
reads back metrics (the only device->host sync besides checkpoints and sample grids). Each logging
window also records where its wall time went (input, step, checkpoint, metrics, samples;
`jaxdiff.training.breakdown`).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from tqdm.auto import tqdm

from jaxdiff import data as data_lib
from jaxdiff import figures, fileio, images, parallel
from jaxdiff.conditioning import Conditioning
from jaxdiff.config_sampling import sample_from_config
from jaxdiff.config_utils import check_training_conditioning, process_from_config, validate_config
from jaxdiff.data.captions import all_captions
from jaxdiff.data.derived_inputs import add_conditioning
from jaxdiff.errors import ConfigError, NonFiniteLossError, TrainingError, WorkdirError
from jaxdiff.evaluation.periodic import check_eval_config, evaluate_for_training
from jaxdiff.models import count_params, create_model
from jaxdiff.training.autoencoder_step import latent_decoder
from jaxdiff.training.breakdown import short_line
from jaxdiff.training.checkpointer import Checkpointer, checkpoint_dir
from jaxdiff.training.latent_space import check_latent_record, latent_inputs, open_latent_space
from jaxdiff.training.metrics import MetricsWindow, MetricWriter
from jaxdiff.training.run_records import (
  claim_checkpoint_dir,
  read_run_record,
  remove_if_empty,
  run_compiler_options,
  save_config,
  write_owner,
  write_run_record,
)
from jaxdiff.training.state import (
  TrainState,
  create_optimizer,
  create_train_state,
  state_bytes_per_device,
  train_state_shardings,
)
from jaxdiff.training.step import make_multi_step, make_train_step, multi_step_impl
from jaxdiff.training.teacher import distill_teacher
from jaxdiff.training.workdir_lock import WorkdirLock

__all__ = ["train", "TrainingError", "NonFiniteLossError", "WorkdirError"]

log = logging.getLogger("jaxdiff.train")

# The run's random streams. split(key(config.seed)) gives the parameters' initialisation key
# (STREAM_INIT) and the train steps' base key (STREAM_STEPS; step i folds in i). The periodic
# sample grids draw from key(config.seed + GRID_SEED_OFFSET), the same noise at every grid.
STREAM_INIT, STREAM_STEPS = 0, 1
GRID_SEED_OFFSET = 1


def _check_workdir(workdir: str) -> None:
  if fileio.exists(workdir) and not fileio.isdir(workdir):
    raise WorkdirError(
      f"--workdir={workdir} is a file, not a folder. Pass a folder (it is created if missing; a run "
      "there resumes), e.g. a new name next to that file."
    )
  try:
    fileio.makedirs(workdir, exist_ok=True)
    probe = os.path.join(workdir, f".write_test_{os.getpid()}")
    fileio.atomic_write_text(probe, "ok")
    fileio.remove(probe)
  except OSError as e:
    raise WorkdirError(
      f"Cannot write to workdir {workdir!r} ({e.strerror or e}). Pass a --workdir you can "
      "write to (a local folder or a gs:// path on TPU VMs)."
    ) from None


class _Locks:
  """The locks a run holds: its workdir's and, for a checkpoint folder outside it, that folder's."""

  def __init__(self):
    self.held: list[WorkdirLock] = []

  def take(self, folder: str, what: str) -> None:
    lock = WorkdirLock(folder, what=what)
    lock.acquire()
    self.held.append(lock)

  def release(self) -> None:
    while self.held:
      self.held.pop().release()


def _claim_workdir(workdir: str, config: ml_collections.ConfigDict) -> tuple[_Locks, bool]:
  """Create the workdir if needed and take its lock (process 0: one run per workdir; WorkdirError
  naming the other run otherwise); check that the config's checkpoint folder is this run's
  (`run_records.claim_checkpoint_dir`) and lock it too when it lies outside the workdir. Returns
  the locks and whether the workdir was made here."""
  workdir = fileio.abspath(workdir)
  created = not fileio.exists(workdir)
  _check_workdir(workdir)
  locks = _Locks()
  if parallel.is_main_process():
    try:
      locks.take(workdir, "workdir")
      directory = checkpoint_dir(workdir, config)
      claim_checkpoint_dir(workdir, directory, config)
      if directory != fileio.join(workdir, "checkpoints"):
        fileio.makedirs(directory, exist_ok=True)
        locks.take(directory, "checkpoint folder")
    except BaseException:
      locks.release()
      if created:
        remove_if_empty(workdir)
      raise
  return locks, created


class _Preemption:
  """SIGTERM or SIGINT (Ctrl-C) sets a flag; the loop finishes the current step, saves and exits 0.
  A second Ctrl-C stops at once, without saving (KeyboardInterrupt)."""

  def __init__(self):
    self.requested = False
    self.signal_name = "SIGTERM"
    self._old: dict = {}

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      for sig in (signal.SIGTERM, signal.SIGINT):
        self._old[sig] = signal.signal(sig, self._handle)
    return self

  def _handle(self, signum, frame):
    if self.requested and signum == signal.SIGINT:
      raise KeyboardInterrupt
    if not self.requested:
      self.signal_name = signal.Signals(signum).name
    self.requested = True
    log.warning(
      "%s received: finishing the current step, saving a checkpoint, then exiting%s.",
      signal.Signals(signum).name,
      " (Ctrl-C again stops at once, without saving)" if signum == signal.SIGINT else "",
    )

  def __exit__(self, *exc):
    for sig, old in self._old.items():
      signal.signal(sig, old)


def _stack(batches: list[dict]) -> dict:
  return {k: np.stack([b[k] for b in batches]) for k in batches[0]}


@dataclasses.dataclass
class _Run:
  """Everything `train` sets up before its loop."""

  config: ml_collections.ConfigDict
  main: bool  # process 0 writes files and prints
  cache: str | None
  model: Any
  schedule: Any
  state: TrainState
  step_key: jax.Array
  ckpt: Checkpointer
  restored_step: int | None
  steps_per_call: int
  jitted: Any
  batches: Iterator[dict]  # global batches (stacked steps_per_call at a time)
  writer: MetricWriter
  sample_fn: Callable | None
  eval_every: int

  @property
  def step(self) -> int:
    return int(parallel.fetch(self.state.step))


def _check_batch(global_batch: int, mesh) -> int:
  per_device = parallel.check_global_batch(global_batch, mesh)
  if global_batch % jax.process_count():
    raise ConfigError(
      f"config.train.batch_size={global_batch} must divide over {jax.process_count()} processes."
    )
  return per_device


def _log_multi_step(k: int) -> None:
  """steps_per_dispatch > 1: which loop `make_multi_step` uses here (unrolled on CPU, where a
  scanned loop runs convolution gradients many times slower; benchmarks/BENCHMARKS.md)."""
  if k > 1:
    log.info("config.train.steps_per_dispatch=%d: %s loop", k, multi_step_impl())


def _global_batches(config, start_step: int, k: int, sharding, latent=None) -> Iterator[dict]:
  """This process's batches as global arrays, k train steps' batches stacked when k > 1."""
  ds = latent_inputs(data_lib.create_dataset(config, start_step=start_step), config, latent, start_step)

  def batches():
    while True:
      yield parallel.to_global(next(ds) if k == 1 else _stack([next(ds) for _ in range(k)]), sharding)

  return batches()


def _setup(config: ml_collections.ConfigDict, workdir: str) -> tuple[_Run, str]:
  """Validate, build the mesh, model, state (restored when a checkpoint exists), the compiled
  step's jit, the data stream, the writers; returns the run and its start-up message."""
  validate_config(config)
  check_training_conditioning(config)
  workdir = fileio.abspath(workdir)
  _check_workdir(workdir)
  main = parallel.is_main_process()
  cache = jax.config.jax_compilation_cache_dir  # set once per process by the CLI (train.py)
  mesh = parallel.mesh_from_config(config)  # ("data", "fsdp"); config.parallel.fsdp checked here
  global_batch = int(config.train.batch_size)
  per_device = _check_batch(global_batch, mesh)
  k = int(config.train.steps_per_dispatch)
  _log_multi_step(k)
  repl = parallel.replicated(mesh)
  batch_sharding = parallel.data_sharding(mesh, leading_axes=1 if k > 1 else 0)

  info = data_lib.dataset_info(config)  # validates the data fields before any compile
  latent = open_latent_space(config)  # latent diffusion: the autoencoder, the one the workdir records
  check_latent_record(workdir, latent, write=main)
  eval_every = int(config.eval.every)
  if eval_every:
    check_eval_config(config)
  model = create_model(config)
  schedule = process_from_config(config)  # a Schedule (process 'vp') or a jaxdiff.processes process
  seed = int(config.seed)
  tx, _ = create_optimizer(config)  # one optimizer object: the state and its shardings share a structure
  state_sharding = train_state_shardings(config, model, mesh, tx)  # replicated, or fsdp-sharded
  # keys are made inside jit so that they are global arrays on every process
  state = jax.jit(
    lambda: create_train_state(config, model, jax.random.split(jax.random.key(seed))[STREAM_INIT], tx),
    out_shardings=state_sharding,
  )()
  step_key = jax.jit(lambda: jax.random.split(jax.random.key(seed))[STREAM_STEPS], out_shardings=repl)()
  ckpt = Checkpointer(workdir, keep=int(config.train.keep_checkpoints), config=config)
  state, restored_step = ckpt.restore(state)
  record = read_run_record(workdir)
  options = run_compiler_options(record)  # a resumed run compiles what it compiled before
  if main:
    save_config(config, workdir)
    record = write_run_record(workdir, ckpt.directory, options, record)
    if ckpt.directory != fileio.join(workdir, "checkpoints"):
      write_owner(ckpt.directory, workdir, record["run_id"])
  jitted = jax.jit(
    make_multi_step(make_train_step(config, model, schedule, distill_teacher(config)), k),
    in_shardings=(state_sharding, batch_sharding, repl),
    out_shardings=(state_sharding, repl),
    donate_argnums=(0,),
    compiler_options=options or None,
  )
  step = int(parallel.fetch(state.step))
  run = _Run(
    config=config,
    main=main,
    cache=cache,
    model=model,
    schedule=schedule,
    state=state,
    step_key=step_key,
    ckpt=ckpt,
    restored_step=restored_step,
    steps_per_call=k,
    jitted=jitted,
    batches=_global_batches(config, step, k, batch_sharding, latent),
    writer=MetricWriter(workdir, main),
    # every process runs the sampler (its arrays span all processes); only process 0 writes
    sample_fn=_make_sampler(config, model, schedule, workdir, info, main)
    if config.train.sample_every
    else None,
    eval_every=eval_every,
  )
  msg = (
    f"jaxdiff train: {jax.device_count()} device(s) ({jax.devices()[0].platform}), "
    f"{jax.process_count()} process(es), global batch {global_batch}, per-device batch {per_device}, "
    f"{count_params(state.params):,} parameters, "
    f"mesh data {mesh.shape['data']} x fsdp {mesh.shape['fsdp']}, "
    f"{state_bytes_per_device(state, state_sharding):,} bytes/device of params + optimizer state + EMA, "
    f"data {info.name} {tuple(info.shape)}, "
    + (f"resumed at step {step}" if restored_step is not None else "new run")
    + f", {int(config.train.num_steps)} steps, workdir {workdir}"
  )
  return run, msg


def train(config: ml_collections.ConfigDict, workdir: str, *, stop_at_step: int | None = None) -> Any:
  """Train (or resume) the model `config` describes, writing everything under `workdir`.

  Resumes from the newest readable checkpoint in workdir/checkpoints. Stops at
  config.train.num_steps (or earlier at `stop_at_step`, as a test of interruption), on SIGTERM
  or Ctrl-C (after saving), or with NonFiniteLossError. Holds workdir/train.lock meanwhile (a
  second run on the workdir is refused). Returns the final TrainState.
  """
  lock, created = _claim_workdir(workdir, config)
  try:
    run, msg = _setup(config, workdir)
  except BaseException:  # a start-up error leaves no lock, and no workdir if this call made it empty
    lock.release()
    if created:
      remove_if_empty(fileio.abspath(workdir))
    raise
  t_cfg, ckpt, k = config.train, run.ckpt, run.steps_per_call
  if run.main:
    print(msg, flush=True)
  log.info(msg)
  state, step = run.state, run.step
  num_steps = int(t_cfg.num_steps)
  end_step = num_steps if stop_at_step is None else min(num_steps, int(stop_at_step))
  window = MetricsWindow(
    int(t_cfg.batch_size), t_cfg.nan_policy, ckpt, run.restored_step, int(t_cfg.max_skipped_steps)
  )
  pbar = tqdm(
    total=num_steps, initial=step, disable=not run.main, unit="step", dynamic_ncols=True, mininterval=1.0
  )
  t_start = time.perf_counter()
  compile_s = None
  stopped_by_signal = False
  try:
    with _Preemption() as preempt:
      if step < end_step:
        batch = next(run.batches)
        compiled, compile_s = _first_compile(run, state, batch, step, window, pbar)
      clock = window.clock
      while step < end_step:
        state, metrics = compiled(state, batch, run.step_key)
        window.add(step, metrics, k)
        step += k
        pbar.update(k)
        at_end = step >= end_step
        # grids and checkpoints before the log line: their time falls in the window that ends here
        _periodic(run, state, step, window)
        if step % t_cfg.checkpoint_every == 0 or at_end or preempt.requested or ckpt.reached_preemption(step):
          window.wait_for_steps()  # the step's own time, not the checkpoint's
          jax.block_until_ready(state)
          with clock.timing("checkpoint"):
            window.flush()  # a non-finite loss stops before its state is saved
            ckpt.save(state)
          window.last_saved = step
          stopped_by_signal = preempt.requested
        if step % t_cfg.log_every == 0 or at_end:
          _log(run, step, window, pbar)
        if stopped_by_signal:
          break
        if not at_end:
          batch = clock.wait_input(metrics, lambda: next(run.batches))
      if not stopped_by_signal and step >= num_steps:
        _final_grid(run, state, step)
  finally:
    pbar.close()
    try:
      ckpt.close()  # the last save completes (or its failure is reported) before the lock goes
    finally:
      run.writer.close()
      lock.release()
  if run.main:
    how = f"stopped by {preempt.signal_name}" if stopped_by_signal else "done"
    print(
      f"jaxdiff train: {how} at step {step} in {time.perf_counter() - t_start:.1f}s"
      + (f" (first-step compile {compile_s:.1f}s)" if compile_s is not None else "")
      + f"; checkpoints in {ckpt.directory}",
      flush=True,
    )
  return state


def _first_compile(
  run: _Run, state: TrainState, batch: Any, step: int, window: MetricsWindow, pbar: Any
) -> tuple[Any, float]:
  """The train step compiled for the first batch, and the seconds that took (logged, and kept out
  of the first window's throughput and breakdown)."""
  t0 = time.perf_counter()
  compiled = run.jitted.lower(state, batch, run.step_key).compile()
  compile_s = time.perf_counter() - t0
  if run.main:
    pbar.write(f"first step compiled in {compile_s:.1f}s (compilation cache: {run.cache or 'off'})")
  run.writer.write(step, {"compile_seconds": compile_s})
  window.restart()
  return compiled, compile_s


def _log(run: _Run, step: int, window: MetricsWindow, pbar: Any) -> None:
  """The window's scalars to the writers and the progress bar (their time counted as metrics)."""
  scalars = window.summary()
  with window.clock.timing("metrics"):
    run.writer.write(step, scalars)
    pbar.set_postfix(
      loss=f"{scalars['loss']:.4f}", img_s=f"{scalars['images_per_sec']:.0f}", time=short_line(scalars)
    )


def _periodic(run: _Run, state: TrainState, step: int, window: MetricsWindow) -> None:
  """The sample grid and the evaluation due at `step` (their time counted as samples, after the
  step's outputs are computed)."""
  grid = run.sample_fn is not None and step % run.config.train.sample_every == 0
  evaluate = bool(run.eval_every) and step % run.eval_every == 0
  if not (grid or evaluate):
    return
  window.wait_for_steps()
  jax.block_until_ready(state)
  with window.clock.timing("samples"):
    if grid:
      path = run.sample_fn(state, step)
      if path:
        run.writer.write_image(step, "samples", path)
    if evaluate:
      run.writer.write(step, _evaluate(run.config, run.model, run.schedule, state))


def _final_grid(run: _Run, state: TrainState, step: int) -> None:
  """The sample grid of the finished model, unless the last step wrote one (a run shorter than
  train.sample_every would otherwise end without any picture)."""
  if run.sample_fn is not None and step % run.config.train.sample_every != 0:
    path = run.sample_fn(state, step)
    if path:
      run.writer.write_image(step, "samples", path)


def _evaluate(config, model, schedule, state) -> dict[str, float]:
  """config.eval's periodic sample-quality figures for the EMA model (every process takes part)."""

  def sample_fn(num, key, labels):
    return parallel.fetch(sample_from_config(config, model, schedule, state.ema_params, key, num, labels))

  return evaluate_for_training(config, sample_fn)


def grid_conditioning(config, n: int, *, points: bool = False) -> tuple[dict, int | None]:
  """The fixed conditioning of the periodic sample grids: (keyword arguments of
  sample_from_config for n samples, images per grid row).

  Class-conditional models: one row per class. Caption models (config.data.cond='caption'): the
  60 digit captions in class-major order (cycled), six per row. Image-conditioned models: the
  first n held-out images' conditioning (the "sr" input of the digits test split, or of the
  first evaluation batch for other data sets). Points (`points=True`): the labels only.
  """
  cond = Conditioning.from_config(config)
  kwargs: dict = {}
  nrow = None
  labels = cond.grid_labels(n)
  if labels is not None:
    kwargs["labels"] = labels
    nrow = len(labels) // cond.num_classes
    n = len(labels)
  if points:
    return kwargs, nrow
  if cond.context and config.data.cond == "caption":
    caps = all_captions()
    kwargs["context"] = jnp.asarray(caps[np.arange(n) % len(caps)])
    nrow = 6
  if cond.x_cond:
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
  out_dir = os.path.join(workdir, "samples")
  if write:
    fileio.makedirs(out_dir, exist_ok=True)
  n = int(config.train.num_sample_images)
  key = jax.random.key(int(config.seed) + GRID_SEED_OFFSET)
  points = info.kind == "points"
  cond, nrow = grid_conditioning(config, n, points=points)
  num = len(cond["labels"]) if "labels" in cond else n
  decode = latent_decoder(config)  # latent diffusion (config.latent.vae): the grids show decoded images

  def run(state, step: int) -> str | None:
    x = parallel.fetch(sample_from_config(config, model, schedule, state.ema_params, key, num, **cond))
    if decode is not None:
      x = decode(x)
    if not write:
      return None
    path = os.path.join(out_dir, f"step_{step:07d}.png")
    if points:
      # the view fits the true distribution (else the central 99 %): strays of a young model stay off it
      figures.save_points(x, path, str(config.data.name), f"EMA samples, step {step}")
    else:
      images.save_image_grid(x, path, nrow=nrow)
    return path

  return run
