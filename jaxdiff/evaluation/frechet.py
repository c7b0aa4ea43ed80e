"""The Fréchet distance between Gaussians fitted to two feature sets (FID when the features are Inception's).

    d^2 = |mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^{1/2})

tr((S1 S2)^{1/2}) is computed without a general matrix square root: with S1 = G G^T (pivoted
Cholesky, G [D, rank]) the nonzero eigenvalues of S1 S2 are those of the symmetric PSD matrix
G^T S2 G, so the trace root is the sum of the square roots of its eigenvalues (the lower-rank
matrix is factored). Everything runs in float64; eigenvalues that round below zero are
clipped. This agrees with the usual `scipy.linalg.sqrtm(S1 @ S2)` route (tests check it) at a
fraction of its cost (one symmetric eigenvalue problem: seconds for 2048-d Inception
features), with no complex parts and no diagonal "offset" needed for singular covariances
(fewer samples than dimensions). scipy comes with scikit-learn, a jaxdiff dependency.

Fréchet distances estimated from n samples are biased upwards by roughly O(dim / n): compare
figures computed from the same number of samples (see `jaxdiff.evaluation.digits`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.linalg
from scipy.linalg import lapack  # scipy is a scikit-learn dependency, so always installed

from jaxdiff.errors import DataError

__all__ = [
  "RunningStatistics",
  "feature_statistics",
  "frechet_distance",
  "frechet_distance_from_features",
  "trace_sqrt_product",
]


def as_rows(x: Any, name: str, min_rows: int = 1, rows: str = "examples", why: str = "") -> np.ndarray:
  """`x` as a float64 [N, D] array with N >= `min_rows` finite rows, else a ValueError naming
  `name` (shared input check of the feature and point-set metrics)."""
  arr = np.asarray(x, dtype=np.float64)
  if arr.ndim != 2:
    raise DataError(f"{name} must be a 2-D array [num_{rows}, dim], got shape {arr.shape}")
  if arr.shape[0] < min_rows:
    raise DataError(f"{name} needs at least {min_rows} {rows}{why}, got {arr.shape[0]}")
  if not np.all(np.isfinite(arr)):
    raise DataError(f"{name} contains NaN or Inf (a diverged model or a broken feature network?)")
  return arr


def _as_features(features: Any, name: str = "features") -> np.ndarray:
  return as_rows(features, name, 2, "examples", " to estimate a covariance")


def feature_statistics(features: Any) -> tuple[np.ndarray, np.ndarray]:
  """(mean [D], covariance [D, D]) of features [N, D], float64; covariance with N - 1 (as np.cov)."""
  x = _as_features(features)
  mu = x.mean(axis=0)
  centred = x - mu
  sigma = centred.T @ centred / (x.shape[0] - 1)
  return mu, sigma


class RunningStatistics:
  """Mean and covariance accumulated batch by batch (for feature sets too big to keep).

  Sums are kept in float64 around a shift (the first batch's mean), which keeps the
  covariance accurate when the features have a large common offset.
  """

  def __init__(self, dim: int):
    if int(dim) < 1:
      raise DataError(f"dim must be >= 1, got {dim}")
    self.dim = int(dim)
    self.count = 0
    self._shift = None
    self._sum = np.zeros(self.dim, np.float64)
    self._outer = np.zeros((self.dim, self.dim), np.float64)

  def update(self, features: Any) -> None:
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != self.dim:
      raise DataError(f"expected features of shape [batch, {self.dim}], got {x.shape}")
    if x.shape[0] == 0:
      return
    if not np.all(np.isfinite(x)):
      raise DataError("features contain NaN or Inf")
    if self._shift is None:
      self._shift = x.mean(axis=0)
    c = x - self._shift
    self._sum += c.sum(axis=0)
    self._outer += c.T @ c
    self.count += x.shape[0]

  def finalize(self) -> tuple[np.ndarray, np.ndarray]:
    if self.count < 2:
      raise DataError(f"need at least 2 examples for a covariance, got {self.count}")
    mean_c = self._sum / self.count
    sigma = (self._outer - self.count * np.outer(mean_c, mean_c)) / (self.count - 1)
    return self._shift + mean_c, (sigma + sigma.T) / 2.0


def _check_stats(mu: Any, sigma: Any, which: str) -> tuple[np.ndarray, np.ndarray]:
  mu = np.asarray(mu, dtype=np.float64)
  sigma = np.asarray(sigma, dtype=np.float64)
  if mu.ndim != 1:
    raise DataError(f"mu{which} must be a 1-D mean vector, got shape {mu.shape}")
  if sigma.shape != (mu.shape[0], mu.shape[0]):
    raise DataError(
      f"sigma{which} must be a [{mu.shape[0]}, {mu.shape[0]}] covariance matching "
      f"mu{which}, got shape {sigma.shape}"
    )
  if not (np.all(np.isfinite(mu)) and np.all(np.isfinite(sigma))):
    raise DataError(f"mu{which} / sigma{which} contain NaN or Inf")
  return mu, sigma


def _psd_factor(sigma: np.ndarray) -> np.ndarray:
  """G [D, r] with sigma = G G^T and r its numerical rank: pivoted Cholesky (LAPACK ?pstrf)."""
  c, piv, rank, info = lapack.dpstrf((sigma + sigma.T) / 2.0, tol=-1.0, lower=1)
  if info < 0:
    raise ValueError(f"pivoted Cholesky failed (LAPACK info {info})")
  g = np.zeros((sigma.shape[0], rank), np.float64)
  g[piv - 1, :] = np.tril(c)[:, :rank]
  return g


def trace_sqrt_product(sigma1: Any, sigma2: Any) -> float:
  """tr((S1 S2)^{1/2}) for symmetric PSD S1, S2 (the eigenvalues of S1 S2 are real and >= 0).

  With a rank-revealing factor S1 = G G^T (G [D, r], pivoted Cholesky), the nonzero eigenvalues
  of S1 S2 are those of the symmetric PSD r x r matrix G^T S2 G: one small eigenvalue problem,
  nothing inverted, exact for singular covariances (fewer samples than dimensions). The
  lower-rank matrix is factored, so the eigenvalue problem is as small as it can be.
  """
  s1 = np.asarray(sigma1, dtype=np.float64)
  s2 = np.asarray(sigma2, dtype=np.float64)
  g1, g2 = _psd_factor(s1), _psd_factor(s2)
  g, other = (g1, s2) if g1.shape[1] <= g2.shape[1] else (g2, s1)
  if g.shape[1] == 0:
    return 0.0
  m = g.T @ other @ g
  w = scipy.linalg.eigh((m + m.T) / 2.0, eigvals_only=True, check_finite=False)
  return float(np.sum(np.sqrt(np.clip(w, 0.0, None))))


def frechet_distance(mu1: Any, sigma1: Any, mu2: Any, sigma2: Any) -> float:
  """Squared Fréchet (2-Wasserstein) distance between N(mu1, sigma1) and N(mu2, sigma2).

  The quantity FID reports (no square root taken). For equal covariances it is |mu1 - mu2|^2.
  """
  mu1, sigma1 = _check_stats(mu1, sigma1, "1")
  mu2, sigma2 = _check_stats(mu2, sigma2, "2")
  if mu1.shape != mu2.shape:
    raise DataError(f"the two statistics have different dimensions: {mu1.shape[0]} vs {mu2.shape[0]}")
  diff = mu1 - mu2
  value = diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * trace_sqrt_product(sigma1, sigma2)
  # Round-off can leave a tiny negative number for identical statistics.
  return float(max(value, 0.0))


def frechet_distance_from_features(features1: Any, features2: Any) -> float:
  """frechet_distance of the Gaussians fitted to two feature sets [N1, D] and [N2, D]."""
  f1 = _as_features(features1, "features1")
  f2 = _as_features(features2, "features2")
  if f1.shape[1] != f2.shape[1]:
    raise DataError(f"feature dimensions differ: {f1.shape[1]} vs {f2.shape[1]}")
  return frechet_distance(*feature_statistics(f1), *feature_statistics(f2))
