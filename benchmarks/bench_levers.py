"""A/B of performance levers on jaxdiff training, each arm in a fresh process with the
diffusers peer timed interleaved in the same process as the anchor, so that arms run at
different times (different machine load) still compare: the lever's effect is the change of
the jaxdiff/diffusers ratio (and of jaxdiff's images/s, shown too).

    python benchmarks/bench_levers.py --row=small --levers=baseline,no_perf,spd4,no_donate

Levers (arms):
  baseline     jaxdiff.perf.configure_performance() (the defaults: malloc thresholds)
  no_perf      no configure_performance: default malloc
  ynn_off      configure_performance(disable_ynn_fusions=True)
  spd4         4 train steps scanned per dispatch (make_multi_step)
  no_donate    the train state not donated
  one_core     the whole process pinned to one core (taskset -c 1): jaxdiff's XLA thread
               pool then has one thread (the peer is timed on one thread in every arm)
  <f>=<v>      any config.model override, e.g. num_groups=16
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

ARMS = {
  "baseline": [],
  "no_perf": ["--no-perf"],
  "ynn_off": ["--ynn-off"],
  "spd4": ["--steps-per-dispatch=4"],
  "no_donate": ["--no-donate"],
  "one_core": [],
}


def run_arm(name: str, row: str, steps: int, torch_threads: str) -> dict:
  extra = ARMS.get(name)
  if extra is None:
    extra = ["--set", name]
  tag = f"lever:{name}"
  cmd = [
    sys.executable,
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "bench_train.py"),
    f"--rows={row}",
    f"--steps={steps}",
    f"--torch-threads={torch_threads}",
    "--tag",
    tag,
  ] + extra
  if name == "one_core":
    cmd = ["taskset", "-c", "1"] + cmd
  env = {**os.environ, "PYTHONWARNINGS": "ignore"}
  subprocess.run(cmd, check=True, env=env, capture_output=True, text=True)
  with open(common.RESULTS / "train.jsonl") as f:
    recs = [json.loads(line) for line in f if line.strip()]
  return [r for r in recs if r.get("tag") == tag and r["network"] == row][-1]


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--row", default="small")
  p.add_argument("--levers", default="baseline,no_perf,spd4,no_donate")
  p.add_argument("--steps", type=int, default=4)
  p.add_argument("--torch-threads", default="1")
  args = p.parse_args(argv)
  header = ["lever", "jax img/s", "torch img/s", "ratio", "ratio vs baseline", "load after"]
  rows, base = [], None
  for name in [x for x in args.levers.split(",") if x]:
    r = run_arm(name, args.row, args.steps, args.torch_threads)
    if base is None:
      base = r["ratio"]
    rows.append(
      [
        name,
        r["jax_images_per_s"],
        r["torch_images_per_s"],
        r["ratio"],
        r["ratio"] / base,
        str(r.get("loadavg_after")),
      ]
    )
    common.append_result(
      "levers",
      dict(
        row=args.row,
        lever=name,
        record_tag=r["tag"],
        jax_images_per_s=r["jax_images_per_s"],
        torch_images_per_s=r["torch_images_per_s"],
        ratio=r["ratio"],
        ratio_vs_first=r["ratio"] / base,
        env=r["env"],
      ),
    )
    common.print_table(header, rows[-1:])
  print("# summary")
  common.print_table(header, rows)


if __name__ == "__main__":
  main()
