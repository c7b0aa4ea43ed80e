"""How a step's time and memory grow with batch size and network size, and the fitted exponents.

For each network (tiny UNet -> configs/cifar10.py's UNet -> DiT-S/2 -> DiT-B/2) and batch size, one
compiled program: the full train step (forward, backward, Adam, EMA; buffers donated as in the loop)
or, for networks listed in --forward (DiT-B/2 by default, whose training does not fit this CPU's
time), the model's forward pass. Peak memory is XLA's buffer assignment of the compiled program
(arguments + outputs + temporaries - donated aliases), so it needs no run; step time is the median of
--reps runs after a warm-up, skipped (memory only) when the previous batch predicts more than
--max-step-s. Fits: time ~ batch^a per network (least squares in log-log over batches >= --fit-from),
and time ~ (FLOPs per step)^b across networks at --ref-batch.

    python benchmarks/scaling.py [--nets=tiny,cifar10,dit-s2,dit-b2] [--batches=1,4,16,64,256]

Results: results/scaling.jsonl (one line per point, with the load) and a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from jaxdiff import perf, schedules  # noqa: E402
from jaxdiff.models import count_params, create_model  # noqa: E402
from jaxdiff.training import create_train_state, make_train_step  # noqa: E402

DIT = {"dit-s2": "S/2", "dit-b2": "B/2"}


def _config(net: str, batch: int):
  if net in DIT:
    config = common.load_config_file("default")
    config.model.name = "dit"
    config.model.dit_variant = DIT[net]
    config.data.image_size = 32
    config.data.channels = config.model.in_channels = 4
    config.data.num_classes = config.model.num_classes = 1000
    config.train.batch_size = batch
    config.optim.warmup_steps = 0
    return config
  return common.jax_config(common.NETWORKS[net], batch)


def _inputs(config, batch: int) -> dict:
  size, ch = int(config.data.image_size), int(config.data.channels)
  x = {"x": jax.random.normal(jax.random.key(1), (batch, size, size, ch))}
  if int(config.model.num_classes):
    x["label"] = jnp.arange(batch, dtype=jnp.int32) % int(config.data.num_classes)
  return x


def _compile(net: str, batch: int, forward: bool):
  """(run, info) of one compiled program; run() executes it once and blocks."""
  config = _config(net, batch)
  model = create_model(config)
  state = create_train_state(config, model, jax.random.key(0))
  x, key = _inputs(config, batch), jax.random.key(2)
  options = perf.compiler_options() or None
  t0 = time.perf_counter()
  if forward:
    t = jnp.full((batch,), 500.0)
    extra = {"y": x["label"]} if "label" in x else {}
    fn = jax.jit(lambda p, x, t: model.apply({"params": p}, x, t, **extra))
    compiled = fn.lower(state.params, x["x"], t).compile(compiler_options=options)
    holder = None

    def run():
      jax.block_until_ready(compiled(state.params, x["x"], t))

  else:
    step = make_train_step(config, model, schedules.linear(1000))
    compiled = jax.jit(step, donate_argnums=(0,)).lower(state, x, key).compile(compiler_options=options)
    holder = {"state": state}

    def run():
      s, _ = compiled(holder["state"], x, key)
      jax.block_until_ready(s)
      holder["state"] = s

  mem = common.xla_memory(compiled)
  peak = (
    mem.get("argument_size_in_bytes", 0)
    + mem.get("output_size_in_bytes", 0)
    + mem.get("temp_size_in_bytes", 0)
    - mem.get("alias_size_in_bytes", 0)
  )
  info = dict(
    params=count_params(state.params),
    flops=common.xla_flops(compiled),
    compile_s=time.perf_counter() - t0,
    peak_bytes=peak,
    xla_memory=mem,
  )
  return run, info


def fit_exponent(xs, ys) -> float:
  """Least-squares slope of log(y) against log(x): y ~ x^slope."""
  return float(np.polyfit(np.log(xs), np.log(ys), 1)[0]) if len(xs) >= 2 else float("nan")


def measure_net(net: str, batches: list[int], args) -> list[dict]:
  forward = net in args.forward.split(",")
  points, last = [], None
  for b in batches:
    if last is not None and last["step_s"] and last["step_s"] * b / last["batch"] > args.max_step_s:
      timed = False
    else:
      timed = True
    run, info = _compile(net, b, forward)
    step_s = None
    if timed:
      step_s = common.timed(run, reps=args.reps, warmup=1)
    rec = dict(
      net=net,
      batch=b,
      mode="forward" if forward else "train",
      step_s=step_s,
      **info,
      load=common.load_average(),
    )
    common.append_result("scaling", {**rec, "env": common.environment(), "tag": args.tag})
    print(
      f"{net:8s} {rec['mode']:7s} batch {b:4d}: "
      + (f"{step_s * 1e3:9.1f} ms" if step_s else "  not timed")
      + f"  peak {peak_mib(rec):9.1f} MiB  load {rec['load']}",
      flush=True,
    )
    points.append(rec)
    if step_s:
      last = rec
    del run
  return points


def peak_mib(rec: dict) -> float:
  return rec["peak_bytes"] / 2**20


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--nets", default="tiny,cifar10,dit-s2,dit-b2")
  p.add_argument("--batches", default="1,4,16,64,256")
  p.add_argument("--forward", default="dit-b2", help="networks measured forward-only")
  p.add_argument("--reps", type=int, default=3)
  p.add_argument("--max-step-s", type=float, default=20.0)
  p.add_argument("--fit-from", type=int, default=4, help="smallest batch in the batch-size fit")
  p.add_argument("--ref-batch", type=int, default=16, help="batch of the network-size fit")
  p.add_argument("--tag", default="")
  p.add_argument(
    "--report", action="store_true", help="only print the table of results/scaling.jsonl's --tag"
  )
  args = p.parse_args()
  batches = [int(b) for b in args.batches.split(",")]
  if args.report:
    all_points = _stored(args.tag)
  else:
    all_points = {net: measure_net(net, batches, args) for net in args.nets.split(",")}
  print_tables(all_points, batches, args)


def _stored(tag: str) -> dict[str, list[dict]]:
  """The points of results/scaling.jsonl with this tag, per network (the last of each batch)."""
  out: dict[str, dict[int, dict]] = {}
  path = common.RESULTS / "scaling.jsonl"
  for line in open(path) if path.exists() else []:
    rec = json.loads(line)
    if rec.get("tag") == tag:
      out.setdefault(rec["net"], {})[rec["batch"]] = rec
  return {net: [pts[b] for b in sorted(pts)] for net, pts in out.items()}


def print_tables(all_points: dict[str, list[dict]], batches: list[int], args) -> None:
  """The markdown table (time / peak memory per batch, the batch exponent) and the size fit."""
  print("\n| network | mode | params | " + " | ".join(f"b={b}" for b in batches) + " | time ~ batch^a |")
  print("|---|---|---|" + "---|" * len(batches) + "---|")
  for net, pts in all_points.items():
    by_batch = {r["batch"]: r for r in pts}
    fit = [(r["batch"], r["step_s"]) for r in pts if r["step_s"] and r["batch"] >= args.fit_from]
    a = fit_exponent([f[0] for f in fit], [f[1] for f in fit])
    cells = [
      ((f"{r['step_s'] * 1e3:.0f} ms" if r["step_s"] else "–") + f" / {peak_mib(r):.0f} MiB" if r else "–")
      for r in (by_batch.get(b) for b in batches)
    ]
    print(f"| {net} | {pts[0]['mode']} | {pts[0]['params']:,} | " + " | ".join(cells) + f" | {a:.2f} |")
  ref = [
    r
    for pts in all_points.values()
    for r in pts
    if r["batch"] == args.ref_batch and r["step_s"] and r["mode"] == "train"
  ]
  if len(ref) >= 2:
    b = fit_exponent([r["flops"] for r in ref], [r["step_s"] for r in ref])
    print(
      f"\ntrain step time ~ (FLOPs per step)^{b:.2f} across {[r['net'] for r in ref]} at batch {args.ref_batch}"
    )


if __name__ == "__main__":
  main()
