"""Sample-set distances in numpy: sliced Wasserstein, RBF-kernel MMD, nearest neighbours.

All take point sets as [N, D] arrays (images are flattened by the caller) and compute in float64.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from jaxdiff.errors import DataError
from jaxdiff.evaluation.frechet import as_rows

__all__ = [
  "DEFAULT_BANDWIDTHS",
  "sliced_wasserstein",
  "mmd_rbf",
  "mmd_rbf_many",
  "nearest_neighbour_distances",
]

# RBF bandwidths (kernel std) for data in [-1, 1]^2: from a tenth of a mode's width up to the
# scale of the whole distribution, so both fine structure and mass placement count.
DEFAULT_BANDWIDTHS = (0.02, 0.05, 0.1, 0.2, 0.5)


def _points(x: Any, name: str) -> np.ndarray:
  return as_rows(x, name, 1, "points")


def _pair(x: Any, y: Any, min_points: int = 1) -> tuple[np.ndarray, np.ndarray]:
  x, y = _points(x, "x"), _points(y, "y")
  if x.shape[1] != y.shape[1]:
    raise DataError(f"x and y have different dimensions: {x.shape[1]} vs {y.shape[1]}")
  if min(len(x), len(y)) < min_points:
    raise DataError(f"need at least {min_points} points in each set, got {len(x)} and {len(y)}")
  return x, y


def _wasserstein_1d_pow(sx: np.ndarray, sy: np.ndarray, p: float) -> np.ndarray:
  """W_p^p between the empirical distributions of sorted columns sx [N, K] and sy [M, K].

  Exact for any N, M: both quantile functions are step functions; on every interval between
  consecutive breakpoints {i/N} U {j/M} both are constant, so the integral of |Qx - Qy|^p over
  (0, 1) is a finite sum. For N == M this is the mean of |sorted x - sorted y|^p.
  """
  n, m = sx.shape[0], sy.shape[0]
  if n == m:
    return np.mean(np.abs(sx - sy) ** p, axis=0)
  edges = np.union1d(np.arange(1, n + 1) / n, np.arange(1, m + 1) / m)
  widths = np.diff(np.concatenate([[0.0], edges]))
  mids = edges - widths / 2.0
  ix = np.minimum(np.floor(mids * n).astype(np.int64), n - 1)
  iy = np.minimum(np.floor(mids * m).astype(np.int64), m - 1)
  return np.sum(widths[:, None] * np.abs(sx[ix] - sy[iy]) ** p, axis=0)


def sliced_wasserstein(x: Any, y: Any, num_projections: int = 512, seed: int = 0, p: int = 2) -> float:
  """Sliced p-Wasserstein distance SW_p(x, y) = (E_theta W_p^p(theta.x, theta.y))^(1/p).

  theta runs over `num_projections` directions drawn uniformly on the unit sphere from `seed`;
  each 1-D W_p between the projected empirical distributions is exact (sorting). Units are those
  of the data. For y = x + d (a pure shift) every projection is shifted by theta.d, so
  SW_2 = |d| sqrt(E cos^2) = |d| / sqrt(D) and SW_1 = |d| E|cos| (= 2|d|/pi in 2-D).
  """
  x, y = _pair(x, y)
  if int(num_projections) < 1:
    raise DataError(f"num_projections must be >= 1, got {num_projections}")
  if p < 1:
    raise DataError(f"p must be >= 1, got {p}")
  rng = np.random.default_rng(seed)
  theta = rng.standard_normal((int(num_projections), x.shape[1]))
  theta /= np.linalg.norm(theta, axis=1, keepdims=True)
  sx = np.sort(x @ theta.T, axis=0)
  sy = np.sort(y @ theta.T, axis=0)
  return float(np.mean(_wasserstein_1d_pow(sx, sy, p)) ** (1.0 / p))


def _check_bandwidths(bandwidths: Any) -> np.ndarray:
  bw = np.atleast_1d(np.asarray(bandwidths, dtype=np.float64))
  if bw.ndim != 1 or bw.size == 0 or np.any(~np.isfinite(bw)) or np.any(bw <= 0):
    raise DataError(f"bandwidths must be a non-empty list of positive numbers, got {bandwidths!r}")
  return bw


def _kernel_sum(a: np.ndarray, b: np.ndarray, inv2s2: np.ndarray, block: int) -> float:
  """sum_{i, j} k(a_i, b_j) for k = mean over bandwidths of exp(-|a - b|^2 / (2 s^2)), blockwise."""
  total = 0.0
  b_sq = np.sum(b * b, axis=1)
  for start in range(0, len(a), block):
    ab = a[start : start + block]
    d2 = np.sum(ab * ab, axis=1)[:, None] + b_sq[None, :] - 2.0 * ab @ b.T
    d2 = np.maximum(d2, 0.0)
    for c in inv2s2:
      total += float(np.exp(-d2 * c).sum())
  return total / len(inv2s2)


def mmd_rbf(x: Any, y: Any, bandwidths: Sequence[float] = DEFAULT_BANDWIDTHS, *, block: int = 2048) -> float:
  """Unbiased estimate of the squared MMD between the distributions of x [N, D] and y [M, D].

  Kernel: the mean of Gaussian RBF kernels exp(-|a - b|^2 / (2 s^2)) over `bandwidths` s, so
  k(a, a) = 1 and 0 <= MMD^2 <= 2. The unbiased (U-statistic) estimator
  sum_{i != j} k(x_i, x_j) / (N (N-1)) + sum_{i != j} k(y_i, y_j) / (M (M-1)) - 2 mean k(x_i, y_j)
  has expectation exactly MMD^2; it can come out slightly negative when the distributions agree.
  """
  x, y = _pair(x, y, min_points=2)
  return mmd_rbf_many([x], y, bandwidths, block=block)[0]


def mmd_rbf_many(
  xs: Sequence[Any], y: Any, bandwidths: Sequence[float] = DEFAULT_BANDWIDTHS, *, block: int = 2048
) -> list:
  """[mmd_rbf(x, y) for x in xs], computing y's own kernel sum once."""
  inv2s2 = 1.0 / (2.0 * _check_bandwidths(bandwidths) ** 2)
  y = _points(y, "y")
  m = len(y)
  if m < 2:
    raise DataError(f"need at least 2 points in each set, got {m}")
  kyy = (_kernel_sum(y, y, inv2s2, block) - m) / (m * (m - 1))  # the diagonal holds k(a, a) = 1
  out = []
  for x in xs:
    x, _ = _pair(x, y, min_points=2)
    n = len(x)
    kxx = (_kernel_sum(x, x, inv2s2, block) - n) / (n * (n - 1))
    kxy = _kernel_sum(x, y, inv2s2, block) / (n * m)
    out.append(float(kxx + kyy - 2.0 * kxy))
  return out


def nearest_neighbour_distances(
  x: Any, reference: Any, *, block: int = 1024
) -> tuple[np.ndarray, np.ndarray]:
  """Euclidean distance from every row of x [N, D] to its nearest row of reference [M, D], and its index."""
  x, ref = _pair(x, reference)
  ref_sq = np.sum(ref * ref, axis=1)
  dist = np.empty(len(x), np.float64)
  idx = np.empty(len(x), np.int64)
  for start in range(0, len(x), block):
    xb = x[start : start + block]
    d2 = np.sum(xb * xb, axis=1)[:, None] + ref_sq[None, :] - 2.0 * xb @ ref.T
    j = np.argmin(d2, axis=1)
    idx[start : start + len(xb)] = j
    # Recompute the winner's distance directly: the expanded form loses digits for near-copies.
    dist[start : start + len(xb)] = np.linalg.norm(xb - ref[j], axis=1)
  return dist, idx
