"""How long `Checkpointer.save` blocks the training loop, on a config's real train state.

Saves the state `--saves` times, pausing `--pause` seconds between saves as the steps between
two checkpoints would, and prints the median time each save blocked: in total, inside Orbax's
synchronous half (`CheckpointManager.save`), and waiting for the previous save's background write
(with the checksums written after it). The first two saves are left out (warm-up).

    python benchmarks/bench_checkpoint.py --config=configs/digits.py
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

from jaxdiff.models import create_model  # noqa: E402
from jaxdiff.training.checkpointer import Checkpointer  # noqa: E402
from jaxdiff.training.state import create_train_state  # noqa: E402


def _timed(times: list, fn):
  def wrapped(*a, **k):
    t = time.perf_counter()
    try:
      return fn(*a, **k)
    finally:
      times.append(time.perf_counter() - t)

  return wrapped


def main(argv=None) -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--config", default="configs/digits.py", help="a configs/<name>.py file")
  p.add_argument("--saves", type=int, default=8)
  p.add_argument("--pause", type=float, default=1.5, help="seconds between saves (the steps between them)")
  p.add_argument("--tag", default="")
  args = p.parse_args(argv)
  config = common.load_config_file(os.path.splitext(os.path.basename(args.config))[0])
  state = create_train_state(config, create_model(config), jax.random.key(0))
  folder = tempfile.mkdtemp(prefix="jaxdiff_bench_ckpt_")
  times = {"blocked": [], "orbax_sync": [], "previous_write": []}
  try:
    ck = Checkpointer(folder, keep=3, config=config)
    ck._finish = _timed(times["previous_write"], ck._finish)
    ck.manager.save = _timed(times["orbax_sync"], ck.manager.save)
    for _ in range(args.saves):
      state = state.replace(step=state.step + 10)
      jax.block_until_ready(state)
      time.sleep(args.pause)
      _timed(times["blocked"], ck.save)(state)
    ck.close()
  finally:
    shutil.rmtree(folder, ignore_errors=True)
  n = len(jax.tree_util.tree_leaves(state))
  med = {k: float(np.median(v[2 : args.saves])) for k, v in times.items()}
  print(f"{args.config}: {n} arrays; median over saves 3..{args.saves}, load {common.load_average()}")
  for k, v in med.items():
    print(f"  {k:15s} {v:.3f} s")
  common.append_result(
    "checkpoint",
    {
      "config": args.config,
      "args": vars(args),
      "arrays": n,
      "median_s": med,
      "all_s": times,
      "env": common.environment(),
      "tag": args.tag,
    },  # fmt: skip
  )


if __name__ == "__main__":
  main()
