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

from jaxdiff import fileio
from jaxdiff.errors import DataError, run_cli
from jaxdiff.evaluation.digits import evaluate_digits
from jaxdiff.evaluation.digits_judge import DigitsJudge
from jaxdiff.evaluation.fid import evaluate_fid, load_statistics
from jaxdiff.evaluation.inception import InceptionFeatures
from jaxdiff.evaluation.report import format_table, write_json
from jaxdiff.evaluation.toy2d import evaluate_toy2d
from jaxdiff.shards import read_samples

__all__ = ["load_samples", "evaluate_samples", "check_image_range", "main", "run_cli"]

PROG = "python -m jaxdiff.evaluation"

# Float images are jaxdiff's [-1, 1]; a model's unclipped samples may overshoot a little, so only
# values beyond this bound are refused (0..255 or 0..1-scaled-by-255 pixels are far outside it).
FLOAT_IMAGE_BOUND = 1.5


def check_image_range(images: np.ndarray, where: str = "samples") -> None:
  """DataError unless `images` are uint8 (0..255) or floats in [-1, 1] (within FLOAT_IMAGE_BOUND):
  floats in 0..255 would otherwise be scored as images thousands of times too bright."""
  arr = np.asarray(images)
  if arr.dtype == np.uint8 or not np.issubdtype(arr.dtype, np.floating) or arr.size == 0:
    return
  finite = arr[np.isfinite(arr)]
  if finite.size == 0:
    return  # all NaN: the metrics' own finiteness checks name that
  lo, hi = float(finite.min()), float(finite.max())
  if lo < -FLOAT_IMAGE_BOUND or hi > FLOAT_IMAGE_BOUND:
    hint = " (0..255 pixel values?)" if hi > 2.0 and lo >= -FLOAT_IMAGE_BOUND else ""
    raise DataError(
      f"{where}: float images must be in [-1, 1] (jaxdiff's convention), these span {lo:g}..{hi:g}{hint}; "
      "store uint8 0..255 images (as sample.py does) or map floats v in 0..255 to v / 127.5 - 1."
    )


def _check_writable(path: str) -> None:
  """Fail before minutes of evaluation when --out cannot be written (read-only, missing rights, a
  folder): write and remove a probe file beside where the report will go."""
  if fileio.isdir(path):
    raise DataError(f"--out={path} is a folder; give a file name for the JSON report (e.g. report.json).")
  probe = f"{path}.probe"
  try:
    fileio.atomic_write_text(probe, "")
    fileio.remove(probe)
  except OSError as e:
    raise DataError(f"--out={path} cannot be written ({e.strerror or e}); choose a writable path.") from None


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
    check_image_range(samples["images"])
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
    check_image_range(samples["images"])
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
  if args.out:
    _check_writable(args.out)
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
    try:
      write_json(report, args.out)
    except OSError as e:  # e.g. the disk filled up while evaluating
      raise DataError(
        f"--out={args.out} cannot be written ({e.strerror or e}); choose a writable path."
      ) from None
    print(f"wrote {args.out}")
  return 0


if __name__ == "__main__":
  sys.exit(run_cli(main, prog=PROG))
