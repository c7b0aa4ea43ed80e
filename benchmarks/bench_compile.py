"""First-step compile time (cold: fresh process, empty persistent cache; warm: fresh process,
same cache) and peak memory (ru_maxrss of a fresh process running a few train steps), for
jaxdiff and, for memory, the diffusers peer.

Rows: `default` (configs/default.py's network and batch: the config train.py starts from),
`tiny`, `small`, `cifar10` (the benchmark networks at their training batch).

    python benchmarks/bench_compile.py --rows=default,tiny,small,cifar10 [--quick]
    python benchmarks/bench_compile.py --rows=default --arms='jaxdiff,xla_llvm_disable_expensive_passes=true'
    python benchmarks/bench_compile.py --rows=default --experiment=overlap

`--arms`: compiler-option sets (cold and warm each): `jaxdiff` (the library's CPU options) or
`jaxdiff+` followed by `name=value;...` XLA debug options added to them (`jaxdiff+` may be
left out). `--experiment=overlap`: the train step and the periodic sampler (config.sample's
DDIM-50 grid of train.num_sample_images) compiled one after the other vs in two threads, each
in a fresh process with an empty cache: does compiling them concurrently shorten the start?

Each measurement runs in its own subprocess (`--worker`), so that neither the compile cache in
memory nor the allocator's high-water mark of an earlier measurement leaks into the next.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

_T_START = time.perf_counter()  # before JAX and jaxdiff are imported (a worker's import_s)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import concurrent.futures  # noqa: E402

import common  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from jaxdiff import perf, schedules  # noqa: E402
from jaxdiff.config_sampling import sample_from_config  # noqa: E402
from jaxdiff.models import count_params, create_model  # noqa: E402
from jaxdiff.training import create_train_state, make_train_step, setup_compilation_cache  # noqa: E402

_IMPORT_S = time.perf_counter() - _T_START

STEPS_AFTER = 2  # train steps after the first one (peak memory of steady training)


def _maxrss_mb() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def arm_options(arm: str) -> dict:
  """jaxdiff's compiler options plus the arm's `name=value;...` XLA debug options."""
  opts = dict(perf.cpu_compiler_options())
  extra = arm.split("+", 1)[1] if "+" in arm else ("" if arm == "jaxdiff" else arm)
  for item in [i for i in extra.split(";") if i]:
    k, v = item.split("=", 1)
    opts[k] = {"true": True, "false": False}.get(v.lower(), int(v) if v.lstrip("-").isdigit() else v)
  return opts


def _row_config(row: str):
  if row == "default":
    config = common.load_config_file("default")
    batch = int(config.train.batch_size)
    shape = (batch, config.data.image_size, config.data.image_size, config.data.channels)
    config.model.num_classes = 0
  else:
    net = common.NETWORKS[row]
    batch = net.train_batch
    config = common.jax_config(net, batch)
    shape = (batch, net.image_size, net.image_size, net.channels)
  return config, batch, shape


def worker_jax(row: str, cache: str, no_perf: bool, ynn_off: bool = False, arm: str = "jaxdiff") -> dict:
  t_start = time.perf_counter()
  if not no_perf:  # before JAX creates its backend (importing JAX does not)
    perf.configure_performance(disable_ynn_fusions=ynn_off)
  setup_compilation_cache(cache)
  config, batch, shape = _row_config(row)
  t_import = _IMPORT_S + time.perf_counter() - t_start  # the imports, the cache and the config
  model = create_model(config)
  schedule = schedules.linear(config.diffusion.num_timesteps)
  state = create_train_state(config, model, jax.random.PRNGKey(0))
  jax.block_until_ready(state)
  options = arm_options(arm)
  step = jax.jit(
    make_train_step(config, model, schedule),
    donate_argnums=(0,),
    compiler_options=options or None,  # what train.py compiles with (plus the arm's options)
  )
  batch_tree = {"x": jnp.zeros(shape, jnp.float32)}
  key = jax.random.PRNGKey(1)
  t0 = time.perf_counter()
  lowered = step.lower(state, batch_tree, key)
  t1 = time.perf_counter()
  compiled = lowered.compile()
  t2 = time.perf_counter()
  state, metrics = compiled(state, batch_tree, key)
  jax.block_until_ready(state)
  t3 = time.perf_counter()
  rss_first = _maxrss_mb()
  times = []
  for _ in range(STEPS_AFTER):
    a = time.perf_counter()
    state, metrics = compiled(state, batch_tree, key)
    jax.block_until_ready(state)
    times.append(time.perf_counter() - a)
  return dict(
    framework="jax",
    row=row,
    arm=arm,
    options=options,
    batch=batch,
    params=count_params(state.params),
    import_s=t_import,
    trace_lower_s=t1 - t0,
    compile_s=t2 - t1,
    first_step_s=t3 - t0,
    step_s=common.median(times),
    peak_rss_mb=_maxrss_mb(),
    rss_after_first_mb=rss_first,
    xla_memory=common.xla_memory(compiled),
  )


def worker_overlap(row: str, cache: str, mode: str) -> dict:
  """Compile the train step and the periodic sampler's program sequentially or in two threads
  (XLA releases the GIL while compiling); returns each compile's time and the wall time."""
  perf.configure_performance()
  setup_compilation_cache(cache)
  config, batch, shape = _row_config(row)
  model = create_model(config)
  schedule = schedules.linear(config.diffusion.num_timesteps)
  state = create_train_state(config, model, jax.random.PRNGKey(0))
  jax.block_until_ready(state)
  options = perf.compiler_options()
  step = jax.jit(make_train_step(config, model, schedule), donate_argnums=(0,), compiler_options=options)
  num = int(config.train.num_sample_images)
  sampler = jax.jit(
    lambda p, key: sample_from_config(config, model, schedule, p, key, num), compiler_options=options
  )
  key = jax.random.PRNGKey(1)
  t0 = time.perf_counter()
  lowered = {
    "train": step.lower(state, {"x": jnp.zeros(shape, jnp.float32)}, key),
    "sampler": sampler.lower(state.ema_params, key),
  }
  t_lower = time.perf_counter() - t0

  def compile_one(name):
    a = time.perf_counter()
    lowered[name].compile()
    return time.perf_counter() - a

  t1 = time.perf_counter()
  if mode == "concurrent":
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
      futures = {name: pool.submit(compile_one, name) for name in lowered}
      each = {name: f.result() for name, f in futures.items()}
  else:
    each = {name: compile_one(name) for name in lowered}
  wall = time.perf_counter() - t1
  return dict(
    framework="jax",
    row=row,
    mode=mode,
    lower_s=t_lower,
    train_compile_s=each["train"],
    sampler_compile_s=each["sampler"],
    compile_wall_s=wall,
    sampler=str(config.sample.sampler),
    sampler_steps=int(config.sample.num_steps),
    num_sample_images=num,
  )


def worker_torch(row: str) -> dict:
  import torch

  torch.set_num_threads(os.cpu_count() or 1)
  net = common.NETWORKS[row]
  fn, info = common.torch_train(net, net.train_batch)
  times = []
  for _ in range(STEPS_AFTER):
    a = time.perf_counter()
    fn()
    times.append(time.perf_counter() - a)
  return dict(
    framework="torch",
    row=row,
    batch=net.train_batch,
    params=info["params"],
    step_s=common.median(times),
    peak_rss_mb=_maxrss_mb(),
  )


def run_worker(*extra: str, timeout: float = 900) -> dict:
  cmd = [sys.executable, os.path.abspath(__file__), "--worker", *extra]
  out = subprocess.run(
    cmd, capture_output=True, text=True, timeout=timeout, env={**os.environ, "PYTHONWARNINGS": "ignore"}
  )
  for line in reversed(out.stdout.splitlines()):
    if line.startswith("{"):
      return json.loads(line)
  raise RuntimeError(f"worker {extra} failed:\n{out.stderr[-3000:]}")


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--rows", default="default,tiny,small,cifar10")
  p.add_argument("--no-torch-memory", action="store_true")
  p.add_argument("--arms", default="jaxdiff", help="compiler-option arms (see the module docstring)")
  p.add_argument("--experiment", default="", choices=["", "overlap"])
  p.add_argument("--repeats", type=int, default=1, help="--experiment=overlap: pairs of runs")
  p.add_argument("--worker", choices=["jax", "torch", "overlap"], help=argparse.SUPPRESS)
  p.add_argument("--row", help=argparse.SUPPRESS)
  p.add_argument("--arm", default="jaxdiff", help=argparse.SUPPRESS)
  p.add_argument("--mode", default="sequential", help=argparse.SUPPRESS)
  p.add_argument("--cache", default="none", help=argparse.SUPPRESS)
  common.add_common_flags(p)
  args = p.parse_args(argv)

  if args.worker == "jax":
    print(json.dumps(worker_jax(args.row, args.cache, args.no_perf, args.ynn_off, args.arm)))
    return
  if args.worker == "overlap":
    print(json.dumps(worker_overlap(args.row, args.cache, args.mode)))
    return
  if args.experiment == "overlap":
    main_overlap(args)
    return
  if args.worker == "torch":
    print(json.dumps(worker_torch(args.row)))
    return

  print(f"# {time.strftime('%Y-%m-%dT%H:%M:%S')}  load {common.load_average()}")
  header = [
    "row",
    "params",
    "cold first step s",
    "(compile s)",
    "warm first step s",
    "(compile s)",
    "step s",
    "jax peak RSS MB",
    "XLA temp MB",
    "torch peak RSS MB",
  ]
  rows = []
  perf = (["--no-perf"] if args.no_perf else []) + (["--ynn-off"] if args.ynn_off else [])
  arms = [a for a in args.arms.split(",") if a]
  for row in [r for r in args.rows.split(",") if r]:
    for arm in arms:
      with tempfile.TemporaryDirectory(prefix="jaxdiff_cache_") as cache:
        cold = run_worker("jax", "--row", row, "--cache", cache, "--arm", arm, *perf)
        warm = run_worker("jax", "--row", row, "--cache", cache, "--arm", arm, *perf)
      torch_mem = None
      if row != "default" and not args.no_torch_memory:
        torch_mem = run_worker("torch", "--row", row)
      rec = dict(
        bench="compile",
        row=row,
        arm=arm,
        cold=cold,
        warm=warm,
        torch=torch_mem,
        perf=not args.no_perf,
        loadavg=common.load_average(),
        tag=args.tag,
        date=time.strftime("%Y-%m-%dT%H:%M:%S"),
        env=common.environment(),
      )
      common.append_result("compile", rec)
      rows.append(
        [
          row if len(arms) == 1 else f"{row} [{arm}]",
          f"{cold['params'] / 1e6:.2f}M",
          cold["first_step_s"],
          cold["compile_s"],
          warm["first_step_s"],
          warm["compile_s"],
          cold["step_s"],
          warm["peak_rss_mb"],
          warm["xla_memory"].get("temp_size_in_bytes", 0) / 2**20,
          torch_mem["peak_rss_mb"] if torch_mem else float("nan"),
        ]
      )
      common.print_table(header, rows[-1:])
  common.print_summary(header, rows)


def main_overlap(args) -> None:
  """Sequential vs concurrent compiles of the train step and the sampler, cold, alternating
  the order of the two modes over --repeats fresh-process pairs."""
  header = ["row", "mode", "train compile s", "sampler compile s", "both done s", "lower s"]
  rows = []
  for row in [r for r in args.rows.split(",") if r]:
    for rep in range(args.repeats):
      modes = ["sequential", "concurrent"] if rep % 2 == 0 else ["concurrent", "sequential"]
      for mode in modes:
        with tempfile.TemporaryDirectory(prefix="jaxdiff_cache_") as cache:
          r = run_worker("overlap", "--row", row, "--cache", cache, "--mode", mode)
        r.update(
          bench="compile_overlap",
          repeat=rep,
          tag=args.tag,
          loadavg=common.load_average(),
          env=common.environment(),
        )
        common.append_result("compile", r)
        rows.append(
          [row, mode, r["train_compile_s"], r["sampler_compile_s"], r["compile_wall_s"], r["lower_s"]]
        )
        common.print_table(header, rows[-1:])
  common.print_summary(header, rows)


if __name__ == "__main__":
  main()
