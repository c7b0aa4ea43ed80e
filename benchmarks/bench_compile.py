"""First-step compile time (cold: fresh process, empty persistent cache; warm: fresh process,
same cache) and peak memory (ru_maxrss of a fresh process running a few train steps), for
jaxdiff and, for memory, the diffusers peer.

Rows: `default` (configs/default.py's network and batch: the config train.py starts from),
`tiny`, `small`, `cifar10` (the benchmark networks at their training batch).

    python benchmarks/bench_compile.py --rows=default,tiny,small,cifar10 [--quick]

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
import common  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from jaxdiff import perf, schedules  # noqa: E402
from jaxdiff.models import count_params, create_model  # noqa: E402
from jaxdiff.training import create_train_state, make_train_step, setup_compilation_cache  # noqa: E402

_IMPORT_S = time.perf_counter() - _T_START

STEPS_AFTER = 2  # train steps after the first one (peak memory of steady training)


def _maxrss_mb() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def worker_jax(row: str, cache: str, no_perf: bool, ynn_off: bool = False) -> dict:
  t_start = time.perf_counter()
  if not no_perf:  # before JAX creates its backend (importing JAX does not)
    perf.configure_performance(disable_ynn_fusions=ynn_off)
  setup_compilation_cache(cache)
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
  t_import = _IMPORT_S + time.perf_counter() - t_start  # the imports, the cache and the config
  model = create_model(config)
  schedule = schedules.linear(config.diffusion.num_timesteps)
  state = create_train_state(config, model, jax.random.PRNGKey(0))
  jax.block_until_ready(state)
  step = jax.jit(
    make_train_step(config, model, schedule),
    donate_argnums=(0,),
    compiler_options=perf.compiler_options(),  # what train.py compiles with
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
  p.add_argument("--worker", choices=["jax", "torch"], help=argparse.SUPPRESS)
  p.add_argument("--row", help=argparse.SUPPRESS)
  p.add_argument("--cache", default="none", help=argparse.SUPPRESS)
  common.add_common_flags(p)
  args = p.parse_args(argv)

  if args.worker == "jax":
    print(json.dumps(worker_jax(args.row, args.cache, args.no_perf, args.ynn_off)))
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
    "jax peak RSS MB",
    "XLA temp MB",
    "torch peak RSS MB",
  ]
  rows = []
  perf = (["--no-perf"] if args.no_perf else []) + (["--ynn-off"] if args.ynn_off else [])
  for row in [r for r in args.rows.split(",") if r]:
    with tempfile.TemporaryDirectory(prefix="jaxdiff_cache_") as cache:
      cold = run_worker("jax", "--row", row, "--cache", cache, *perf)
      warm = run_worker("jax", "--row", row, "--cache", cache, *perf)
    torch_mem = None
    if row != "default" and not args.no_torch_memory:
      torch_mem = run_worker("torch", "--row", row)
    rec = dict(
      bench="compile",
      row=row,
      cold=cold,
      warm=warm,
      torch=torch_mem,
      perf=not args.no_perf,
      loadavg=common.load_average(),
      tag=args.tag,
      date=time.strftime("%Y-%m-%dT%H:%M:%S"),
    )
    common.append_result("compile", rec)
    rows.append(
      [
        row,
        f"{cold['params'] / 1e6:.2f}M",
        cold["first_step_s"],
        cold["compile_s"],
        warm["first_step_s"],
        warm["compile_s"],
        warm["peak_rss_mb"],
        warm["xla_memory"].get("temp_size_in_bytes", 0) / 2**20,
        torch_mem["peak_rss_mb"] if torch_mem else float("nan"),
      ]
    )
    common.print_table(header, rows[-1:])
  common.print_summary(header, rows)


if __name__ == "__main__":
  main()
