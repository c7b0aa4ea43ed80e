"""Reports: readable tables, JSON files and flat scalars for TensorBoard.

A report is a dict {metric: {"samples": float, "real_heldout": float}, ..., "info": {...}}.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np

from jaxdiff.fileio import atomic_write_text

__all__ = ["METRICS", "format_table", "to_jsonable", "write_json", "flatten"]

# name -> (what it measures, which way is good)
METRICS: dict[str, tuple] = {
  "frechet": ("Fréchet distance to train digits, judge features", "lower; ~held-out = real-like"),
  "confident_share": ("share classified with p >= 0.9", "higher; ~held-out"),
  "class_entropy": ("entropy of predicted classes (bits, max 3.32)", "~held-out (3.32 = all classes)"),
  "class_accuracy": ("asked-for class recognised (guidance)", "higher; >= 0.9 wanted"),
  "memorisation": ("share of near-copies of training images", "~held-out (~0.05); 1.0 = copying"),
  "nn_distance_median": ("median distance to nearest training image", "~held-out; lower = copying"),
  "swd": ("sliced Wasserstein-2 to fresh true draws", "lower; ~held-out = noise floor"),
  "mmd": ("unbiased RBF MMD^2 to fresh true draws", "lower; ~held-out = noise floor"),
  "fid": ("FID to the reference statistics", "lower; ~held-out = real-like"),
}


def _metrics(report: dict[str, Any]):
  return [(k, v) for k, v in report.items() if isinstance(v, dict) and "samples" in v]


def _fmt(value: Any) -> str:
  if value is None or (isinstance(value, float) and math.isnan(value)):
    return "n/a"
  value = float(value)
  if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e5):
    return f"{value:.3e}"
  return f"{value:.4f}"


def format_table(report: dict[str, Any]) -> str:
  """metric | samples | real held-out | reading, one row per metric, plus the sample counts."""
  rows = [("metric", "samples", "real held-out", "better")]
  for name, value in _metrics(report):
    rows.append(
      (name, _fmt(value.get("samples")), _fmt(value.get("real_heldout")), METRICS.get(name, ("", ""))[1])
    )
  widths = [max(len(r[i]) for r in rows) for i in range(4)]
  lines = []
  for i, row in enumerate(rows):
    lines.append(
      "  ".join(
        cell.ljust(w) if j in (0, 3) else cell.rjust(w) for j, (cell, w) in enumerate(zip(row, widths))
      ).rstrip()
    )
    if i == 0:
      lines.append("  ".join("-" * w for w in widths))
  info = report.get("info", {})
  counts = ", ".join(
    f"{k}={info[k]}"
    for k in ("dataset", "num_samples", "num_real_heldout", "num_real_train", "num_reference")
    if info.get(k) is not None
  )
  if counts:
    lines.append(counts)
  for key in ("frechet_note", "note"):
    if key in info:
      lines.append(f"note: {info[key]}")
  return "\n".join(lines)


def to_jsonable(value: Any) -> Any:
  """numpy scalars / arrays to Python; NaN and Inf to None (strict JSON)."""
  if isinstance(value, dict):
    return {str(k): to_jsonable(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [to_jsonable(v) for v in value]
  if isinstance(value, np.ndarray):
    return to_jsonable(value.tolist())
  if isinstance(value, (np.integer,)):
    return int(value)
  if isinstance(value, (float, np.floating)):
    value = float(value)
    return value if math.isfinite(value) else None
  return value


def write_json(report: dict[str, Any], path: str) -> str:
  """Writes the report as JSON, atomically (a temporary file moved into place)."""
  return atomic_write_text(path, json.dumps(to_jsonable(report), indent=2, allow_nan=False) + "\n")


def flatten(report: dict[str, Any], prefix: str = "eval/") -> dict[str, float]:
  """{prefix + metric: samples, prefix + metric + "_real_heldout": baseline} as floats (NaN dropped)."""
  out: dict[str, float] = {}
  for name, value in _metrics(report):
    for key, suffix in (("samples", ""), ("real_heldout", "_real_heldout")):
      v = value.get(key)
      if v is not None and math.isfinite(float(v)):
        out[f"{prefix}{name}{suffix}"] = float(v)
  return out
