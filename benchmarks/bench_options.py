"""In-process A/B of XLA:CPU compiler options on the jaxdiff train step and on DDIM sampling.

Every arm is the same jitted function compiled with different per-executable XLA options
(`lowered.compile(compiler_options=...)`), so all arms live in one process and are timed
interleaved (A, B, C, ..., then reversed) under the same machine load; the diffusers peer is
timed in the same rounds as the anchor. This is how the defaults in `jaxdiff.perf` were chosen.

    python benchmarks/bench_options.py --rows=tiny --what=train --arms=default,ynn_off,ynn_dots
    python benchmarks/bench_options.py --rows=small --what=ddim --arms=default,ynn_off

Arms:
  default     XLA's defaults (YNNPACK library fusions for convolutions and dots)
  ynn_off     xla_cpu_experimental_ynn_fusion_type=""  (XLA's own / Eigen kernels)
  ynn_dots    YNNPACK for dots only, XLA's own (Eigen) convolutions
  jaxdiff     jaxdiff.perf.cpu_compiler_options() (what the library applies on CPU)
  o1          xla_backend_optimization_level=1 (LLVM -O1: faster compiles)
  <k>=<v>[;<k>=<v>]  any raw XLA debug options
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

from jaxdiff.perf import cpu_compiler_options  # noqa: E402

YNN_OFF = {"xla_cpu_experimental_ynn_fusion_type": ""}
ARMS = {
  "default": {},
  "ynn_off": YNN_OFF,
  "ynn_dots": {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"},
  "o1": {"xla_backend_optimization_level": 1},
}


def arm_options(name: str) -> dict:
  if name == "jaxdiff":
    return cpu_compiler_options()
  if name in ARMS:
    return dict(ARMS[name])
  opts = {}
  for item in name.split(";"):
    k, v = item.split("=", 1)
    opts[k] = int(v) if v.lstrip("-").isdigit() else v
  return opts


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--rows", default="tiny")
  p.add_argument("--what", default="train", choices=["train", "ddim"])
  p.add_argument("--arms", default="default,ynn_off,ynn_dots")
  p.add_argument("--reps", type=int, default=0, help="timed rounds (default: per network)")
  p.add_argument("--batch", type=int, default=0)
  p.add_argument("--no-torch", action="store_true", help="skip the diffusers anchor")
  common.add_common_flags(p)
  args = p.parse_args(argv)
  common.setup(args)
  arms = [a for a in args.arms.split(",") if a]
  for row in [r for r in args.rows.split(",") if r]:
    net = common.NETWORKS[row]
    fns, infos = {}, {}
    if args.what == "train":
      batch = args.batch or net.train_batch
      reps = args.reps or net.train_steps
      for a in arms:
        fns[a], infos[a] = common.jax_train(net, batch, compiler_options=arm_options(a))
      torch_fn = None if args.no_torch else common.torch_train(net, batch)
    else:
      batch = args.batch or net.sample_batch
      reps = args.reps or net.sample_reps
      for a in arms:
        fns[a], infos[a] = common.jax_ddim(net, batch, compiler_options=arm_options(a))
      torch_fn = None if args.no_torch else common.torch_ddim(net, batch)
    if torch_fn is not None:
      threads = common.choose_torch_threads(common.torch_thread_counts(args))
      fns[f"torch@{threads}"] = torch_fn[0] if isinstance(torch_fn, tuple) else torch_fn
    load_before = common.load_average()
    times = common.interleaved(fns, reps)
    med = {k: common.median(v) for k, v in times.items()}
    anchor = next((k for k in med if k.startswith("torch")), None)
    header = ["arm", "median s", "vs first arm", "vs diffusers (>1: faster)", "compile s", "options"]
    rows = []
    for k, v in med.items():
      ratio = med[anchor] / v if anchor else float("nan")
      rows.append(
        [
          k,
          v,
          med[arms[0]] / v,
          ratio,
          infos[k].get("compile_s", infos[k].get("first_call_s", "")) if k in infos else "",
          str(arm_options(k)) if k in infos else "peer",
        ]
      )
    print(
      f"# {row} {args.what} batch {batch}, {reps} interleaved rounds, load {load_before} -> "
      f"{common.load_average()}"
    )
    common.print_table(header, rows)
    common.append_result(
      "options",
      dict(
        row=row,
        what=args.what,
        batch=batch,
        reps=reps,
        times=times,
        medians=med,
        anchor=anchor,
        options={a: arm_options(a) for a in arms},
        compile_s={a: infos[a].get("compile_s", infos[a].get("first_call_s")) for a in arms},
        tag=args.tag,
        env=common.environment(),
        load_before=load_before,
      ),
    )


if __name__ == "__main__":
  main()
