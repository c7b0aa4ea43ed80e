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
import glob
import os
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

from jaxdiff.evaluation.report import format_table, write_json

__all__ = ["load_samples", "evaluate_samples", "main", "run_cli"]


def _shard_paths(path: str):
  if os.path.isdir(path):
    paths = sorted(glob.glob(os.path.join(path, "*.npz")))
    if not paths:
      raise FileNotFoundError(f"no .npz sample shards in {path}")
    return paths
  if not os.path.exists(path):
    raise FileNotFoundError(f"--samples={path} does not exist (give a .npz file or a directory of them)")
  return [path]


def load_samples(path: str) -> dict[str, Any]:
  """Reads sample shards into {"images" | "points": array, "labels": int32 [N] or None, "index": [N] or None}."""
  parts: dict[str, list] = {}
  kind = None
  paths = _shard_paths(path)
  for p in paths:
    with np.load(p) as f:
      keys = set(f.files)
      here = "images" if "images" in keys else "points" if "points" in keys else None
      if here is None:
        raise ValueError(f"{p} has neither 'images' nor 'points' (keys: {sorted(keys)})")
      if kind is not None and here != kind:
        raise ValueError(f"{p} holds '{here}' but earlier shards hold '{kind}'")
      kind = here
      data = f[kind]
      n = len(data)
      parts.setdefault(kind, []).append(data)
      for key in ("labels", "index"):
        if key in keys:
          arr = np.asarray(f[key]).reshape(-1)
          if len(arr) != n:
            raise ValueError(f"{p}: '{key}' has {len(arr)} entries for {n} samples")
          parts.setdefault(key, []).append(arr)
  for key in ("labels", "index"):
    if key in parts and len(parts[key]) != len(paths):
      raise ValueError(
        f"'{key}' is in {len(parts[key])} of the {len(paths)} shards in {path}; "
        "all shards or none must have it"
      )
  data = np.concatenate(parts[kind])
  labels = np.concatenate(parts["labels"]).astype(np.int32) if "labels" in parts else None
  index = np.concatenate(parts["index"]).astype(np.int64) if "index" in parts else None
  duplicates = 0
  if index is not None:
    order = np.argsort(index, kind="stable")
    _, first = np.unique(index[order], return_index=True)
    keep = order[first]
    duplicates = len(index) - len(keep)
    data, index = data[keep], index[keep]
    labels = labels[keep] if labels is not None else None
  return {kind: data, "labels": labels, "index": index, "duplicates": duplicates}


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
    from jaxdiff.evaluation.digits import evaluate_digits
    from jaxdiff.evaluation.digits_judge import DigitsJudge

    if "images" not in samples:
      raise ValueError("--dataset=digits needs image samples (shards with an 'images' array)")
    labels = samples.get("labels")
    if labels is not None and not np.any(labels >= 0):
      labels = None
    judge = DigitsJudge.load(judge_path) if judge_path else None
    report = evaluate_digits(samples["images"], labels, judge=judge)
  elif dataset.startswith("toy2d/"):
    from jaxdiff.evaluation.toy2d import evaluate_toy2d

    if "points" not in samples:
      raise ValueError(f"--dataset={dataset} needs point samples (shards with a 'points' array)")
    report = evaluate_toy2d(samples["points"], dataset, seed=seed)
  elif dataset == "fid":
    from jaxdiff.evaluation.fid import evaluate_fid, load_statistics
    from jaxdiff.evaluation.inception import InceptionFeatures

    if "images" not in samples:
      raise ValueError("--dataset=fid needs image samples (shards with an 'images' array)")
    stats = load_statistics(fid_stats)  # fail on a missing file before loading the network
    features = InceptionFeatures.from_file(inception_weights, batch_size=batch_size)
    report = evaluate_fid(samples["images"], stats, features)
  else:
    raise ValueError(f"--dataset={dataset!r}: use 'digits', 'toy2d/<name>' (e.g. toy2d/s_curve) or 'fid'")
  if samples.get("duplicates"):
    report.setdefault("info", {})["duplicate_indices_dropped"] = int(samples["duplicates"])
  return report


def _parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(
    prog="python -m jaxdiff.evaluation",
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


def run_cli(entry, argv: Sequence[str] | None = None) -> int:
  """Runs a command's main(argv); a user error (missing file, bad value) prints one line, exit status 2."""
  try:
    return entry(argv)
  except (FileNotFoundError, ValueError, ImportError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2


if __name__ == "__main__":
  sys.exit(run_cli(main))
