"""Gaussian densities shared by the training loss and the likelihood evaluation, and the exact
denoiser of a Gaussian mixture that sampler checks use (pure jnp)."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import jax.scipy.special
from jax.scipy.special import log_ndtr

__all__ = ["normal_kl", "discretized_gaussian_log_likelihood", "mixture_posterior", "LOG_SQRT_2PI"]

LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)
_LOG_SQRT_2PI = LOG_SQRT_2PI


def normal_kl(mean1, logvar1, mean2, logvar2):
  """Elementwise KL(N(mean1, exp(logvar1)) || N(mean2, exp(logvar2))) in nats."""
  return 0.5 * (
    -1.0 + logvar2 - logvar1 + jnp.exp(logvar1 - logvar2) + jnp.square(mean1 - mean2) * jnp.exp(-logvar2)
  )


def _log_diff_ndtr(a, b):
  """log(Phi(b) - Phi(a)) for a < b, accurate in both tails.

  The difference is taken on the side of zero where the two CDF values are small (Phi(-a) -
  Phi(-b) when a > 0). Where the interval is so narrow that the two log-CDFs round to the same
  float, the midpoint rule log(phi((a+b)/2) (b - a)) is used instead (relative error
  (b-a)^2 (m^2 - 1) / 24, negligible there).
  """
  upper_side = a > 0
  hi = jnp.where(upper_side, log_ndtr(-a), log_ndtr(b))
  lo = jnp.where(upper_side, log_ndtr(-b), log_ndtr(a))
  d = lo - hi  # <= 0
  exact = hi + jnp.log(-jnp.expm1(jnp.minimum(d, -1e-30)))
  width = b - a
  mid = 0.5 * (a + b)
  midpoint = -0.5 * jnp.square(mid) - _LOG_SQRT_2PI + jnp.log(width)
  use_mid = (width < 1e-3) & (width * jnp.abs(mid) < 0.1)
  return jnp.where(use_mid, midpoint, exact)


def discretized_gaussian_log_likelihood(x, mean, log_scale, *, num_bins: int = 256):
  """log P(x's bin) under N(mean, exp(log_scale)^2), elementwise, for x in [-1, 1] on num_bins levels.

  Bin k is centred on -1 + 2k / (num_bins - 1) with half width 1 / (num_bins - 1); the lowest bin
  extends to -inf and the highest to +inf, so the bins' probabilities sum to one.
  """
  half = 1.0 / (num_bins - 1)
  inv = jnp.exp(-log_scale)
  centred = x - mean
  upper = (centred + half) * inv
  lower = (centred - half) * inv
  log_cdf_upper = log_ndtr(upper)
  log_sf_lower = log_ndtr(-lower)
  middle = _log_diff_ndtr(lower, upper)
  return jnp.where(x < -1.0 + half, log_cdf_upper, jnp.where(x > 1.0 - half, log_sf_lower, middle))


def mixture_posterior(x, alpha, sigma, weights, means, stds):
  """Exact (E[x0 | x_t], E[eps | x_t]) for data from an isotropic Gaussian mixture, x_t = alpha x0 + sigma eps.

  `weights` [K], `means` [K, *example_shape], `stds` [K]; x is [batch, *example_shape] and alpha,
  sigma broadcast against it. The exact denoiser of any process: samplers are checked against it.
  eps is formed as sigma (x - alpha m) / v, finite as sigma -> 0. Computes in x's dtype.
  """
  x = jnp.asarray(x)
  dt = x.dtype
  w, m, s = (jnp.asarray(v, dt) for v in (weights, means, stds))
  alpha, sigma = jnp.asarray(alpha, dt), jnp.asarray(sigma, dt)
  feat = tuple(range(1, x.ndim))  # the example's axes
  d = x[None] - alpha * m[:, None]  # [K, batch, ...]
  bshape = (-1,) + (1,) * x.ndim
  v = jnp.square(alpha) * jnp.square(s).reshape(bshape) + jnp.square(sigma)  # per component variance
  dim = math.prod(x.shape[1:])
  logp = (
    jnp.log(w).reshape(bshape)
    - 0.5 * dim * jnp.log(v)
    - 0.5 * jnp.sum(jnp.square(d) / v, axis=tuple(a + 1 for a in feat), keepdims=True)
  )
  r = jnp.exp(logp - jax.scipy.special.logsumexp(logp, axis=0, keepdims=True))
  x0 = jnp.sum(r * (m[:, None] + alpha * jnp.square(s).reshape(bshape) / v * d), axis=0)
  eps = jnp.sum(r * (sigma * d / v), axis=0)
  return x0, eps
