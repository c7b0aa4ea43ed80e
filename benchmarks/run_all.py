"""Every benchmark, one command: training, DDIM-50 sampling, compile time / memory for each
network row, and the 2-D MLP sampler; jaxdiff and diffusers interleaved in each process.

    python benchmarks/run_all.py                                   # all rows
    python benchmarks/run_all.py --rows=tiny,small,cifar10,mlp --quick
    python benchmarks/run_all.py --rows=small --only=train,sample   # one row, some benchmarks

Rows: tiny, small, cifar10 (UNets; each runs train, sample and compile), default (compile time
of configs/default.py's first step), mlp (2-D sampler). Each benchmark runs in a fresh Python
process (XLA flags apply at backend creation). Results: benchmarks/results/*.jsonl.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--rows", default="default,tiny,small,cifar10,mlp")
  p.add_argument(
    "--only", default="train,sample,compile,mlp", help="which benchmarks to run for the UNet rows"
  )
  p.add_argument("--quick", action="store_true")
  p.add_argument("--no-perf", action="store_true")
  p.add_argument(
    "--ynn-off",
    action="store_true",
    help="disable XLA:CPU's YNN fusions (the 'main' results were measured so)",
  )
  p.add_argument("--torch-threads", default="auto")
  p.add_argument("--tag", default="")
  args = p.parse_args(argv)

  rows = [r for r in args.rows.split(",") if r]
  only = set(args.only.split(","))
  unets = [r for r in rows if r in ("tiny", "small", "cifar10")]
  common = (
    (["--quick"] if args.quick else [])
    + (["--no-perf"] if args.no_perf else [])
    + (["--ynn-off"] if args.ynn_off else [])
    + ["--tag", args.tag]
  )
  torch_flags = ["--torch-threads", str(args.torch_threads)]
  jobs = []
  if unets and "train" in only:
    jobs.append(["bench_train.py", "--rows=" + ",".join(unets)] + common + torch_flags)
  if unets and "sample" in only:
    jobs.append(["bench_sample.py", "--rows=" + ",".join(unets)] + common + torch_flags)
  compile_rows = [r for r in rows if r in ("default", "tiny", "small", "cifar10")]
  if compile_rows and "compile" in only:
    jobs.append(["bench_compile.py", "--rows=" + ",".join(compile_rows)] + common)
  if "mlp" in rows:
    jobs.append(["bench_mlp.py"] + common + torch_flags)

  failed = []
  for job in jobs:
    cmd = [sys.executable, os.path.join(HERE, job[0])] + job[1:]
    print(f"\n=== {' '.join(job)}   (load {open('/proc/loadavg').read().split()[:3]})", flush=True)
    t0 = time.time()
    rc = subprocess.call(cmd, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    print(f"=== {job[0]} finished in {time.time() - t0:.0f} s (exit {rc})", flush=True)
    if rc:
      failed.append(job[0])
  if failed:
    print("FAILED:", ", ".join(failed))
    sys.exit(1)


if __name__ == "__main__":
  main()
