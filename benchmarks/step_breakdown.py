"""Where a training run's wall time goes: input, the compiled step, checkpoints, metrics, sample grids.

Runs `jaxdiff.training.train` on a config for a few steps in a temporary workdir, once per arm
(checkpoint every N steps vs never, alternating, `--rounds` times), and prints each arm's throughput
(compile excluded), the mean shares of its wall time the loop logged (metrics.jsonl's
`time/*_share`), and each arm's throughput relative to the first arm's.

    python benchmarks/step_breakdown.py --config=configs/digits.py
    python benchmarks/step_breakdown.py --config=configs/cifar10.py --batch=8 --steps=30

TFDS data sets are replaced by synthetic images of the same shape drawn per batch (nothing to
download; say so next to any figure), so such a run measures the loop, not the TFDS pipeline.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

from jaxdiff import data as data_lib  # noqa: E402
from jaxdiff import perf  # noqa: E402
from jaxdiff.data import base  # noqa: E402
from jaxdiff.training import train  # noqa: E402
from jaxdiff.training.breakdown import CATEGORIES  # noqa: E402


def _synthetic_data(config) -> None:
  """Replace a TFDS data set by images drawn per batch (uniform in [-1, 1], labels when it has
  classes), through the functions the loop calls."""
  shape = (int(config.data.image_size),) * 2 + (int(config.data.channels),)
  classes = int(config.data.num_classes)
  info = base.DatasetInfo(str(config.data.name), "image", shape, classes, 50_000)

  def create_dataset(cfg, *, batch_size=None, start_step=0, **_):
    b = int(batch_size or cfg.train.batch_size)
    rng = np.random.default_rng(int(start_step))
    while True:
      batch = {"x": rng.uniform(-1, 1, (b, *shape)).astype(np.float32)}
      if classes:
        batch["label"] = rng.integers(0, classes, b).astype(np.int32)
      yield batch

  data_lib.create_dataset = create_dataset
  data_lib.dataset_info = lambda cfg, split=None: info


def _config(path: str, args, checkpoint_every: int):
  name = os.path.splitext(os.path.basename(path))[0]
  config = common.load_config_file(name)
  t = config.train
  t.num_steps = args.steps
  t.log_every = args.log_every
  t.checkpoint_every = checkpoint_every
  t.sample_every = args.sample_every
  t.keep_checkpoints = 2
  config.eval.every = 0
  if args.batch:
    t.batch_size = args.batch
  for item in args.set:
    field, value = item.split("=", 1)
    section, key = field.split(".", 1)
    old = config[section][key]
    config[section][key] = type(old)(json.loads(value)) if not isinstance(old, str) else value
  return config


def run_arm(args, checkpoint_every: int) -> dict:
  """One short training run; its windows' throughput and mean shares (weighted by window time)."""
  config = _config(args.config, args, checkpoint_every)
  if str(config.data.name).startswith("tfds/"):
    _synthetic_data(config)
  workdir = tempfile.mkdtemp(prefix="jaxdiff_breakdown_")
  try:
    train(config, workdir)
    rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
  finally:
    shutil.rmtree(workdir, ignore_errors=True)
  windows, prev = [], 0
  for r in rows:
    if "steps_per_sec" in r:
      windows.append((r["step"] - prev, (r["step"] - prev) / r["steps_per_sec"], r))
      prev = r["step"]
  seconds = sum(s for _, s, _ in windows)
  shares = {c: sum(s * r[f"time/{c}_share"] for _, s, r in windows) / seconds for c in CATEGORIES}
  return {
    "steps_per_sec": sum(n for n, _, _ in windows) / seconds,
    "batch": int(config.train.batch_size),
    **{f"{c}_share": v for c, v in shares.items()},
  }


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--config", required=True, help="a configs/<name>.py file")
  p.add_argument("--steps", type=int, default=60)
  p.add_argument("--log-every", type=int, default=10)
  p.add_argument("--arms", default="10,never", help="checkpoint_every per arm: steps or 'never'")
  p.add_argument("--sample-every", type=int, default=0)
  p.add_argument("--batch", type=int, default=0, help="override config.train.batch_size")
  p.add_argument("--rounds", type=int, default=2, help="times each arm runs, alternating")
  p.add_argument("--set", action="append", default=[], help="section.field=value (repeatable)")
  p.add_argument("--tag", default="")
  args = p.parse_args()
  perf.setup_compilation_cache("")  # as train.py: the arms after the first skip the compile
  arms = {a: (10**9 if a == "never" else int(a)) for a in args.arms.split(",")}
  runs: dict[str, list[dict]] = {a: [] for a in arms}
  load = [common.load_average()]
  for _ in range(args.rounds):
    for name, every in arms.items():
      runs[name].append(run_arm(args, every))
      load.append(common.load_average())
  header = ["checkpoint every", "steps/s (median)", *[f"{c} %" for c in CATEGORIES], "vs first arm"]
  base_rate = float(np.median([r["steps_per_sec"] for r in runs[next(iter(arms))]]))
  rows = []
  for name, rs in runs.items():
    rate = float(np.median([r["steps_per_sec"] for r in rs]))
    shares = [100 * float(np.median([r[f"{c}_share"] for r in rs])) for c in CATEGORIES]
    rows.append([name, f"{rate:.3f}", *[f"{s:.1f}" for s in shares], f"{rate / base_rate:.3f}"])
  rec = {
    "config": args.config,
    "args": vars(args),
    "runs": runs,
    "loadavg": load,
    "env": common.environment(),
    "tag": args.tag,
  }
  common.append_result("step_breakdown", rec)
  print(f"{args.config}: batch {rs[0]['batch']}, {args.steps} steps, load {load}")
  common.print_table(header, rows)


if __name__ == "__main__":
  main()
