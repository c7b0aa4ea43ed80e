"""`python -m jaxdiff.evaluation`: score a sample set against real data and write a JSON report.

    python -m jaxdiff.evaluation --samples=runs/digits/generated --dataset=digits --out=report.json
    python -m jaxdiff.evaluation --samples=runs/toy2d/generated --dataset=toy2d/s_curve
    python -m jaxdiff.evaluation --samples=DIR --dataset=fid --fid_stats=cifar10_stats.npz \\
        --inception_weights=inception_fid.npz

Samples are `.npz` shards (a file, or every `*.npz` in a directory) holding "images" (uint8
NHWC) or "points" (float32 [N, D]), optionally "labels" (int32, the requested class, -1 for
none) and "index" (int, the sample's global number: shards are ordered by it and repeated
indices, e.g. from a resumed sampling run, are counted once).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

from jaxdiff.errors import DataError, run_cli
from jaxdiff.evaluation.digits import evaluate_digits
from jaxdiff.evaluation.digits_judge import DigitsJudge
from jaxdiff.evaluation.fid import evaluate_fid, load_statistics
from jaxdiff.evaluation.inception import InceptionFeatures
from jaxdiff.evaluation.report import format_table, write_json
from jaxdiff.evaluation.toy2d import evaluate_toy2d
from jaxdiff.shards import read_samples

__all__ = ["load_samples", "evaluate_samples", "main", "run_cli"]

PROG = "python -m jaxdiff.evaluation"


def load_samples(path: str) -> dict[str, Any]:
  """Reads sample shards into {"images" | "points": array, "labels": int32 [N] or None, "index": [N] or
  None, "duplicates": int} (`jaxdiff.shards.read_samples`)."""
  return read_samples(path)


def evaluate_samples(
  samples: dict[str, Any],
  dataset: str,
  *,
  seed: int = 0,
  fid_stats: str | None = None,
  inception_weights: str | None = None,
  batch_size: int = 64,
  judge_path: str | None = None,
) -> dict[str, Any]:
  """Dispatches a loaded sample set to the evaluation of `dataset` (digits | toy2d/<name> | fid)."""
  if dataset == "digits":
    if "images" not in samples:
      raise DataError("--dataset=digits needs image samples (shards with an 'images' array)")
    labels = samples.get("labels")
    if labels is not None and not np.any(labels >= 0):
      labels = None
    judge = DigitsJudge.load(judge_path) if judge_path else None
    report = evaluate_digits(samples["images"], labels, judge=judge)
  elif dataset.startswith("toy2d/"):
    if "points" not in samples:
      raise DataError(f"--dataset={dataset} needs point samples (shards with a 'points' array)")
    report = evaluate_toy2d(samples["points"], dataset, seed=seed)
  elif dataset == "fid":
    if "images" not in samples:
      raise DataError("--dataset=fid needs image samples (shards with an 'images' array)")
    stats = load_statistics(fid_stats)  # fail on a missing file before loading the network
    features = InceptionFeatures.from_file(inception_weights, batch_size=batch_size)
    report = evaluate_fid(samples["images"], stats, features)
  else:
    raise DataError(f"--dataset={dataset!r}: use 'digits', 'toy2d/<name>' (e.g. toy2d/s_curve) or 'fid'")
  if samples.get("duplicates"):
    report.setdefault("info", {})["duplicate_indices_dropped"] = int(samples["duplicates"])
  return report


def _parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(
    prog=PROG,
    description=__doc__,
    formatter_class=argparse.RawDescriptionHelpFormatter,
  )
  p.add_argument("--samples", required=True, help="a .npz sample shard or a directory of them")
  p.add_argument("--dataset", required=True, help="digits | toy2d/<name> | fid")
  p.add_argument("--out", default="", help="JSON report to write (default: print only)")
  p.add_argument("--seed", type=int, default=0, help="seed of the fresh toy2d draws and projections")
  p.add_argument("--fid_stats", default=None, help="reference statistics .npz (fid_stats command)")
  p.add_argument(
    "--inception_weights",
    default=None,
    help="FID Inception weights: pytorch-fid's .pth (needs torch) or its converted .npz",
  )
  p.add_argument("--batch_size", type=int, default=64, help="Inception batch size")
  p.add_argument("--judge", default=None, help="digits judge weights (default: the shipped file)")
  return p


def main(argv: Sequence[str] | None = None) -> int:
  args = _parser().parse_args(argv)
  samples = load_samples(args.samples)
  report = evaluate_samples(
    samples,
    args.dataset,
    seed=args.seed,
    fid_stats=args.fid_stats,
    inception_weights=args.inception_weights,
    batch_size=args.batch_size,
    judge_path=args.judge,
  )
  print(format_table(report))
  if args.out:
    write_json(report, args.out)
    print(f"wrote {args.out}")
  return 0


if __name__ == "__main__":
  sys.exit(run_cli(main, prog=PROG))
