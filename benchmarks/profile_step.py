"""Where a jaxdiff train step (or DDIM sampling step) spends its time on CPU: traces a few
steps with `jax.profiler`, reads the XPlane protobuf, and prints the time per HLO op summed
over the steps, grouped by kind (YNN/oneDNN/XNN library fusions, convolutions, dots, loop /
reduction fusions, copies...), plus the top individual ops.

    python benchmarks/profile_step.py --row=tiny [--what=train|forward] [--steps=5] [--top=25]

Caveat: XLA:CPU runs some ops asynchronously on its intra-op pool (the Eigen convolutions):
their thunk events end when the work is handed off, so their time shows up on the next op that
waits for them. Treat the kinds as a coarse breakdown of the memory-bound work (reductions,
transposes, element-wise fusions), not as exact convolution times.

Needs TensorFlow's copy of the XPlane proto (`tensorflow.tsl.profiler.protobuf.xplane_pb2`,
installed with the `tfds` extra) to read the trace.
"""

from __future__ import annotations

import argparse
import ast
import collections
import glob
import os
import re
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
import jax  # noqa: E402


def read_op_times(trace_dir: str) -> dict[str, float]:
  """{hlo op name: total seconds} from the XLA:CPU thunk events in an XPlane trace."""
  from tensorflow.tsl.profiler.protobuf import xplane_pb2

  files = glob.glob(os.path.join(trace_dir, "**", "*.xplane.pb"), recursive=True)
  if not files:
    raise FileNotFoundError(f"no .xplane.pb under {trace_dir}")
  space = xplane_pb2.XSpace()
  with open(files[0], "rb") as f:
    space.ParseFromString(f.read())
  totals: dict[str, float] = collections.defaultdict(float)
  for plane in space.planes:
    names = {k: v.name for k, v in plane.event_metadata.items()}
    for line in plane.lines:
      for ev in line.events:
        name = names.get(ev.metadata_id, "")
        totals[(plane.name, line.name, name)] += ev.duration_ps * 1e-12
  return totals


def kind_of(op: str) -> str:
  for pat, kind in (
    (r"ynn_fusion", "ynn fusion (conv/dot)"),
    (r"xnn_fusion", "xnn fusion"),
    (r"onednn", "onednn"),
    (r"^convolution|conv_general", "convolution (eigen)"),
    (r"^dot|dot_general", "dot"),
    (r"reduce", "reduce fusion"),
    (r"copy|transpose", "copy / transpose"),
    (r"fusion", "loop fusion"),
    (r"while|scan|call", "control flow"),
  ):
    if re.search(pat, op):
      return kind
  return "other"


def phases_of(hlo_text: str) -> dict[str, str]:
  """{hlo op name: phase} from the op_name metadata of an optimized HLO module: "forward"
  (inside jvp), "backward" (inside transpose(jvp)), "outside the model" (optimizer, EMA,
  clipping, noise, loss) for the rest."""
  out = {}
  for m in re.finditer(r"^\s+(?:ROOT )?%([\w.\-]+) = .*?op_name=\"([^\"]*)\"", hlo_text, re.M):
    name, op = m.groups()
    out[name] = (
      "backward" if "transpose(" in op else "forward" if "jvp(" in op or "UNet" in op else "outside the model"
    )
  return out


def parse_override(text: str):
  """A --set value: a Python literal (number, bool, None, tuple, list, string in quotes) read with
  ast.literal_eval, else the text itself (relu, silu, ...). Never evaluated as code."""
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
    return text


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--row", default="tiny", choices=sorted(common.NETWORKS))
  p.add_argument(
    "--what", default="train", choices=["train", "forward"], help="forward: 5 DDIM steps (one forward each)"
  )
  p.add_argument("--batch", type=int, default=0)
  p.add_argument("--steps", type=int, default=5)
  p.add_argument("--top", type=int, default=25)
  p.add_argument("--set", nargs="*", default=[], help="config.model overrides k=v")
  common.add_common_flags(p)
  args = p.parse_args(argv)
  common.setup(args)
  net = common.NETWORKS[args.row]
  overrides = {}
  for item in args.set:
    k, v = item.split("=", 1)
    overrides[k] = parse_override(v)
  if args.what == "train":
    run_one, info = common.jax_train(net, args.batch or net.train_batch, model_overrides=overrides)
  else:
    run_one, info = common.jax_ddim(
      net, args.batch or net.sample_batch, num_steps=5, model_overrides=overrides
    )
  for _ in range(2):
    run_one()
  with tempfile.TemporaryDirectory() as d:
    with jax.profiler.trace(d):
      for _ in range(args.steps):
        run_one()
    totals = read_op_times(d)
  # Keep events of the XLA thunk executor (host threads), keyed by op name.
  per_op: dict[str, float] = collections.defaultdict(float)
  for (plane, line, name), sec in totals.items():
    if not name or name.startswith(("Thunk", "PjRt", "ExecuteHelper", "$")) or "::" in name:
      continue
    per_op[name] += sec / args.steps
  by_kind: dict[str, float] = collections.defaultdict(float)
  by_phase: dict[str, float] = collections.defaultdict(float)
  phases = phases_of(info.get("hlo_text", ""))
  for name, sec in per_op.items():
    by_kind[kind_of(name)] += sec
    by_phase[phases.get(name, "unattributed")] += sec
  total = sum(by_kind.values())
  print(f"# {args.row} {args.what}: per step, summed over threads, {total * 1e3:.1f} ms of ops")
  common.print_table(
    ["kind", "ms/step", "share %"],
    [[k, v * 1e3, 100 * v / total] for k, v in sorted(by_kind.items(), key=lambda kv: -kv[1])],
  )
  print()
  common.print_table(
    ["phase", "ms/step", "share %", "ops"],
    [
      [k, v * 1e3, 100 * v / total, sum(1 for n in per_op if phases.get(n, "unattributed") == k)]
      for k, v in sorted(by_phase.items(), key=lambda kv: -kv[1])
    ],
  )
  print()
  common.print_table(
    ["op", "kind", "ms/step", "share %"],
    [
      [n, kind_of(n), s * 1e3, 100 * s / total]
      for n, s in sorted(per_op.items(), key=lambda kv: -kv[1])[: args.top]
    ],
  )


if __name__ == "__main__":
  main()
