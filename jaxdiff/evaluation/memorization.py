"""Memorisation: how many samples are near-copies of training examples, against real held-out data.

Each sample's nearest-neighbour Euclidean distance to the training set (in pixel space, images
in [-1, 1] flattened) is compared with a threshold set by real data: the `percentile`-th
percentile (default 5th) of the held-out examples' nearest-neighbour distances to the same
training set. A sample closer to a training image than all but 5% of real unseen digits come
is counted as a near-copy. The held-out share is therefore about 5% by construction (the
calibration row); a model that reproduces its training set scores far above it, up to 1.0.
The median nearest-neighbour distance is reported beside it: samples sitting much closer to
the training set than fresh real data do are memorised even when the threshold is not crossed.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from jaxdiff.errors import DataError
from jaxdiff.evaluation.distances import nearest_neighbour_distances

__all__ = ["DEFAULT_PERCENTILE", "memorisation"]

DEFAULT_PERCENTILE = 5.0


def _flat(x: Any, name: str) -> np.ndarray:
  arr = np.asarray(x, dtype=np.float64)
  if arr.ndim < 2:
    raise DataError(
      f"{name} must have a leading example axis and at least one feature axis, got shape {arr.shape}"
    )
  return arr.reshape(arr.shape[0], -1)


def memorisation(
  samples: Any, train: Any, heldout: Any, *, percentile: float = DEFAULT_PERCENTILE
) -> dict[str, Any]:
  """Near-copy share and median nearest-neighbour distance, for samples and for held-out real data.

  Returns {"memorisation": {"samples": share, "real_heldout": share},
           "nn_distance_median": {"samples": ..., "real_heldout": ...},
           "threshold": distance, "percentile": percentile,
           "nearest_train_index": int array [num_samples]}.
  """
  if not 0.0 < percentile < 100.0:
    raise DataError(f"percentile must be in (0, 100), got {percentile}")
  s, tr, ho = _flat(samples, "samples"), _flat(train, "train"), _flat(heldout, "heldout")
  if not s.shape[1] == tr.shape[1] == ho.shape[1]:
    raise DataError(
      f"samples, train and heldout must have the same shape per example; got "
      f"{s.shape[1]}, {tr.shape[1]} and {ho.shape[1]} values per example"
    )
  d_heldout, _ = nearest_neighbour_distances(ho, tr)
  d_samples, idx = nearest_neighbour_distances(s, tr)
  threshold = float(np.percentile(d_heldout, percentile))
  return {
    "memorisation": {
      "samples": float(np.mean(d_samples <= threshold)),
      "real_heldout": float(np.mean(d_heldout <= threshold)),
    },
    "nn_distance_median": {
      "samples": float(np.median(d_samples)),
      "real_heldout": float(np.median(d_heldout)),
    },
    "threshold": threshold,
    "percentile": float(percentile),
    "nearest_train_index": idx,
  }
