"""Digits evaluation: the judge's view of a sample set, every figure beside real held-out digits.

Figures (each {"samples": ..., "real_heldout": ...}; the held-out row is the same figure for
the 360 real test digits, which neither the judge nor the diffusion model trained on):

  frechet             Fréchet distance to the *train* digits in the judge's 64-d feature space.
                      Held out: test vs train. The samples' figure is the mean over disjoint
                      chunks of as many samples as there are held-out digits (360), so both
                      rows carry the same small-sample bias; info["frechet_all_samples"] uses
                      every sample at once. Lower is better; ~ the held-out row is "real-like".
  confident_share     share classified with max probability >= 0.9 (legible digits).
  class_entropy       entropy (bits) of the predicted-class histogram: log2(10) = 3.32 when all
                      ten digits appear equally often; lower means missing or dominant classes.
  class_accuracy      (samples with a requested label only) share classified as the class they
                      were asked for (guidance works); held out: the judge's accuracy.
  memorisation        share of near-copies of training digits (nearest-neighbour distance below
                      the 5th percentile of held-out digits' distances to train; held out ~5%).
  nn_distance_median  median pixel-space distance to the nearest training digit.
"""

from __future__ import annotations

import functools
from typing import Any

import ml_collections
import numpy as np

from jaxdiff.data import load_arrays
from jaxdiff.errors import DataError
from jaxdiff.evaluation.digits_judge import DigitsJudge, to_judge_input
from jaxdiff.evaluation.frechet import feature_statistics, frechet_distance
from jaxdiff.evaluation.memorization import DEFAULT_PERCENTILE, memorisation

__all__ = ["CONFIDENCE", "evaluate_digits", "load_digits_splits", "class_entropy_bits"]

CONFIDENCE = 0.9
MAX_FRECHET_CHUNKS = 10

Split = tuple[np.ndarray, np.ndarray | None]


def load_digits_splits() -> tuple[Split, Split]:
  """((train_x, train_labels), (test_x, test_labels)) from jaxdiff.data (x in [-1, 1], [N, 8, 8, 1])."""
  config = ml_collections.ConfigDict({"data": {"name": "digits"}})
  return load_arrays(config, split="train"), load_arrays(config, split="test")


@functools.lru_cache(maxsize=2)
def _cached_judge(path: str | None) -> DigitsJudge:
  return DigitsJudge.load(path)


def class_entropy_bits(predicted: np.ndarray, num_classes: int = 10) -> float:
  """Entropy in bits of the histogram of predicted classes."""
  counts = np.bincount(np.asarray(predicted, np.int64), minlength=num_classes).astype(np.float64)
  p = counts / max(counts.sum(), 1.0)
  nz = p[p > 0]
  return float(-(nz * np.log2(nz)).sum())


def _split(value: Any, name: str) -> Split:
  if isinstance(value, (tuple, list)) and len(value) == 2:
    x, y = value
  else:
    x, y = value, None
  x = to_judge_input(x)
  if y is not None:
    y = np.asarray(y, np.int32)
    if y.shape != (len(x),):
      raise DataError(f"{name} labels must have shape [{len(x)}], got {y.shape}")
  return x, y


def _frechet_matched(feats: np.ndarray, ref_stats, chunk: int) -> tuple[float, int]:
  """Mean Fréchet distance over up to MAX_FRECHET_CHUNKS disjoint chunks of `chunk` samples."""
  k = min(len(feats) // chunk, MAX_FRECHET_CHUNKS)
  if k == 0:
    return frechet_distance(*feature_statistics(feats), *ref_stats), 0
  values = [
    frechet_distance(*feature_statistics(feats[i * chunk : (i + 1) * chunk]), *ref_stats) for i in range(k)
  ]
  return float(np.mean(values)), k


def evaluate_digits(
  samples: Any,
  labels_requested: Any = None,
  *,
  real_train: Any = None,
  real_test: Any = None,
  judge: DigitsJudge | None = None,
  confidence: float = CONFIDENCE,
  memorisation_percentile: float = DEFAULT_PERCENTILE,
) -> dict[str, Any]:
  """Scores digit samples ([N, 8, 8, 1] floats in [-1, 1] or uint8) with the digits judge.

  labels_requested: int [N], the class each sample was asked for (-1: none), or None.
  real_train / real_test: (x, labels) or x; default: jaxdiff.data's digits train / test splits.
  Returns {metric: {"samples": float, "real_heldout": float}, ..., "info": {...}} with the
  metrics of the module docstring; "class_accuracy" only when some labels were requested.
  """
  x = to_judge_input(samples)
  if len(x) < 2:
    raise DataError(f"need at least 2 samples, got {len(x)}")
  if real_train is None or real_test is None:
    default_train, default_test = load_digits_splits()
    real_train = default_train if real_train is None else real_train
    real_test = default_test if real_test is None else real_test
  train_x, train_y = _split(real_train, "real_train")
  test_x, test_y = _split(real_test, "real_test")
  if judge is None:
    judge = _cached_judge(None)
    if train_y is not None and test_y is not None:
      judge.check_split(train_x, train_y, test_x, test_y)
  if labels_requested is not None:
    labels_requested = np.asarray(labels_requested, np.int64)
    if labels_requested.shape != (len(x),):
      raise DataError(
        f"labels_requested must have shape [{len(x)}] (one per sample, -1 for none), "
        f"got {labels_requested.shape}"
      )
    if np.any(labels_requested >= 10) or np.any(labels_requested < -1):
      raise DataError("labels_requested must be digit classes 0-9, or -1 for unconditional samples")

  feats_s, logits_s = judge.features_and_logits(x)
  feats_tr = judge.features(train_x)
  feats_te, logits_te = judge.features_and_logits(test_x)
  prob_s = _softmax(logits_s)
  prob_te = _softmax(logits_te)
  pred_s, pred_te = prob_s.argmax(axis=1), prob_te.argmax(axis=1)

  ref_stats = feature_statistics(feats_tr)
  fd_heldout = frechet_distance(*feature_statistics(feats_te), *ref_stats)
  fd_samples, chunks = _frechet_matched(feats_s, ref_stats, len(test_x))
  fd_all = frechet_distance(*feature_statistics(feats_s), *ref_stats)

  report: dict[str, Any] = {
    "frechet": {"samples": fd_samples, "real_heldout": fd_heldout},
    "confident_share": {
      "samples": float(np.mean(prob_s.max(axis=1) >= confidence)),
      "real_heldout": float(np.mean(prob_te.max(axis=1) >= confidence)),
    },
    "class_entropy": {"samples": class_entropy_bits(pred_s), "real_heldout": class_entropy_bits(pred_te)},
  }
  info: dict[str, Any] = {
    "dataset": "digits",
    "num_samples": int(len(x)),
    "num_real_heldout": int(len(test_x)),
    "num_real_train": int(len(train_x)),
    "frechet_chunks": chunks,
    "frechet_all_samples": fd_all,
    "confidence_threshold": float(confidence),
    "predicted_class_counts": np.bincount(pred_s, minlength=10).tolist(),
  }
  if chunks == 0:
    info["frechet_note"] = (
      f"only {len(x)} samples (< {len(test_x)} held-out digits): the samples' "
      "Fréchet distance is biased upwards against the held-out row"
    )
  if labels_requested is not None and np.any(labels_requested >= 0):
    asked = labels_requested >= 0
    hits = pred_s[asked] == labels_requested[asked]
    report["class_accuracy"] = {
      "samples": float(np.mean(hits)),
      "real_heldout": float(np.mean(pred_te == test_y)) if test_y is not None else float("nan"),
    }
    per_class = []
    for c in range(10):
      sel = labels_requested[asked] == c
      per_class.append(float(np.mean(hits[sel])) if np.any(sel) else None)
    info["class_accuracy_per_class"] = per_class
    info["num_conditional_samples"] = int(asked.sum())
  mem = memorisation(x, train_x, test_x, percentile=memorisation_percentile)
  report["memorisation"] = mem["memorisation"]
  report["nn_distance_median"] = mem["nn_distance_median"]
  info["memorisation_threshold"] = mem["threshold"]
  info["memorisation_percentile"] = mem["percentile"]
  report["info"] = info
  return report


def _softmax(logits: np.ndarray) -> np.ndarray:
  z = logits - logits.max(axis=1, keepdims=True)
  e = np.exp(z.astype(np.float64))
  return e / e.sum(axis=1, keepdims=True)
