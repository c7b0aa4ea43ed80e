"""2-D toy data: sliced Wasserstein distance and RBF MMD between samples and fresh true draws.

The baseline ("real_heldout") is the same figure for a second, independent fresh draw of the
same size from the true distribution: the value a perfect sampler would get, i.e. the
estimator's own noise floor at this sample size.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from jaxdiff.data import sample_toy2d
from jaxdiff.errors import DataError
from jaxdiff.evaluation.distances import DEFAULT_BANDWIDTHS, mmd_rbf_many, sliced_wasserstein

__all__ = ["evaluate_toy2d", "REFERENCE_STREAM", "BASELINE_STREAM"]

# Random streams of the two fresh draws from the true distribution: sample_toy2d(name, n, (seed, stream)).
REFERENCE_STREAM = 1
BASELINE_STREAM = 2


def evaluate_toy2d(
  samples: Any,
  name: str,
  seed: int = 0,
  *,
  num_projections: int = 512,
  bandwidths: Sequence[float] = DEFAULT_BANDWIDTHS,
  mmd_max_points: int | None = 2000,
) -> dict[str, Any]:
  """Scores 2-D samples against fresh draws of the toy distribution `name` ("s_curve", "toy2d/moons", ...).

  samples: float [N, 2] points in data space. The reference and the baseline are two
  independent draws of N points (jaxdiff.data.sample_toy2d with seeds (seed, REFERENCE_STREAM) and (seed, BASELINE_STREAM)).
  MMD uses the first `mmd_max_points` points of each set (its cost grows as N^2; None: all).

  Returns {"swd": {"samples", "real_heldout"}, "mmd": {"samples", "real_heldout"}, "info": {...}}:
  swd is SW_2 (data units), mmd the unbiased squared MMD (mean of RBF kernels, <= 2).
  """
  x = np.asarray(samples, dtype=np.float64)
  if x.ndim != 2 or x.shape[1] != 2:
    raise DataError(f"toy2d samples must be points of shape [N, 2], got shape {x.shape}")
  if x.shape[0] < 2:
    raise DataError(f"need at least 2 samples, got {x.shape[0]}")
  if not np.all(np.isfinite(x)):
    raise DataError(f"{int(np.sum(~np.isfinite(x).all(axis=1)))} sample(s) contain NaN or Inf")
  n = x.shape[0]
  reference = np.asarray(sample_toy2d(name, n, (int(seed), REFERENCE_STREAM)), np.float64)
  baseline = np.asarray(sample_toy2d(name, n, (int(seed), BASELINE_STREAM)), np.float64)
  k = n if mmd_max_points is None else min(n, int(mmd_max_points))
  swd = {
    "samples": sliced_wasserstein(x, reference, num_projections, seed),
    "real_heldout": sliced_wasserstein(baseline, reference, num_projections, seed),
  }
  mmd_samples, mmd_baseline = mmd_rbf_many([x[:k], baseline[:k]], reference[:k], bandwidths)
  mmd = {"samples": mmd_samples, "real_heldout": mmd_baseline}
  info = {
    "dataset": name if name.startswith("toy2d/") else f"toy2d/{name}",
    "num_samples": n,
    "num_reference": n,
    "num_mmd_points": k,
    "num_projections": int(num_projections),
    "bandwidths": [float(b) for b in bandwidths],
    "seed": int(seed),
  }
  return {"swd": swd, "mmd": mmd, "info": info}
