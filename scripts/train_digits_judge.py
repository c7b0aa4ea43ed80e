"""Trains the digits judge used by `jaxdiff.evaluation` and writes its weights (deterministic).

    python scripts/train_digits_judge.py            # -> jaxdiff/evaluation/assets/digits_judge.msgpack
    python scripts/train_digits_judge.py --out=/tmp/judge.msgpack --seed=0

Data: the digits "train" split of jaxdiff.data (1437 images); the 360 "test" digits are held out
and only measured. Same seed, same library versions -> same weights; a few seconds on a CPU.
Fails (exit status 1) if held-out accuracy is below --min_accuracy.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")  # a tiny network: the CPU is fastest and bitwise stable

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)


def main(argv=None) -> int:
  from jaxdiff.evaluation import digits_judge
  from jaxdiff.evaluation.digits import load_digits_splits

  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--out", default=digits_judge.DEFAULT_JUDGE_PATH, help="output .msgpack file")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--num_epochs", type=int, default=60)
  parser.add_argument(
    "--min_accuracy", type=float, default=0.97, help="fail when held-out accuracy is below this"
  )
  args = parser.parse_args(argv)

  (train_x, train_y), (test_x, test_y) = load_digits_splits()
  start = time.time()
  judge = digits_judge.train_judge(
    train_x, train_y, test_x, test_y, seed=args.seed, num_epochs=args.num_epochs
  )
  acc = judge.meta["heldout_accuracy"]
  print(
    f"trained in {time.time() - start:.1f}s: train accuracy {judge.meta['train_accuracy']:.4f}, "
    f"held-out accuracy {acc:.4f} ({judge.meta['num_heldout']} digits)"
  )
  if acc < args.min_accuracy:
    print(f"held-out accuracy {acc:.4f} < --min_accuracy={args.min_accuracy}: not writing {args.out}")
    return 1
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  judge.save(args.out)
  print(f"wrote {args.out} ({os.path.getsize(args.out) / 1024:.0f} KB)")
  return 0


if __name__ == "__main__":
  sys.exit(main())
