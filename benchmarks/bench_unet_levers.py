"""UNet levers, each against the unchanged step in one process: the two programs are compiled side by
side and timed alternately (`common.interleaved`), and the lever's effect is the ratio of medians.

    python benchmarks/bench_unet_levers.py [--rows=tiny,small,cifar10] [--what=train,ddim] [--reps=8]

Levers:
  fused_gn   GroupNorm through `jaxdiff.models.layers.group_norm` (one-pass float32 statistics, SiLU
             fused in, a hand-written one-reduction gradient) vs flax's nn.GroupNorm + SiLU
             (`layers.FUSED_GROUP_NORM` False while the reference is traced)

Results: results/unet_levers.jsonl (one line per row and program, with the load before and after).
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

from jaxdiff.models import layers  # noqa: E402


def _build(what: str, net, fused: bool):
  """The compiled train step (or DDIM-50 sampler) traced with the lever on or off."""
  old = layers.FUSED_GROUP_NORM
  layers.FUSED_GROUP_NORM = fused
  try:
    if what == "train":
      run, _ = common.jax_train(net, net.train_batch)
    else:
      run, _ = common.jax_ddim(net, net.sample_batch)
  finally:
    layers.FUSED_GROUP_NORM = old
  return run


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--rows", default="tiny,small,cifar10")
  p.add_argument("--what", default="train,ddim")
  p.add_argument("--reps", type=int, default=8)
  p.add_argument("--tag", default="")
  args = p.parse_args()
  print("| network | program | batch | flax GroupNorm s | fused GroupNorm s | speed-up | load before/after |")
  print("|---|---|---|---|---|---|---|")
  for row in args.rows.split(","):
    net = common.NETWORKS[row]
    for what in args.what.split(","):
      load0 = common.load_average()
      fns = {"flax_gn": _build(what, net, False), "fused_gn": _build(what, net, True)}
      times = common.interleaved(fns, reps=args.reps, warmup=1)
      base, lever = common.median(times["flax_gn"]), common.median(times["fused_gn"])
      rec = dict(
        row=row,
        what=what,
        times=times,
        speedup=base / lever,
        load_before=load0,
        load_after=common.load_average(),
      )
      common.append_result("unet_levers", {**rec, "env": common.environment(), "tag": args.tag})
      batch = net.train_batch if what == "train" else net.sample_batch
      print(
        f"| {row} | {what} | {batch} | {base:.3f} | {lever:.3f} | {base / lever:.3f}x | "
        f"{rec['load_before']} / {rec['load_after']} |",
        flush=True,
      )


if __name__ == "__main__":
  main()
