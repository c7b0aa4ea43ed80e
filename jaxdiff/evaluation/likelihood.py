"""Likelihood in bits per dimension from DDPM's discrete-time variational bound.

For data x0 in [-1, 1] with 256 levels per value (8-bit images mapped by u / 127.5 - 1):

    L_vlb = L_T + sum_{t=1}^{T-1} L_{t-1} + L_0                       (0-based timesteps)
    L_T     = KL(q(x_T | x0) || N(0, I))                               "prior"
    L_{t-1} = KL(q(x_{t-1} | x_t, x0) || p(x_{t-1} | x_t)),  x_t ~ q    "kl"
    L_0     = -log p(x0 | x_1): the model's Gaussian at t = 0, integrated over each value's bin
              of width 2/255 (the two end bins extend to -inf / +inf)  "decoder"

Every term is in nats summed over the dimensions of one example, then divided by D ln 2:
bits per dimension, as in Ho et al. (2020) and improved DDPM (Nichol & Dhariwal, 2021), whose
conventions this follows: p's variance is "fixed_small" (the posterior variance, clipped at
t = 0 to its t = 1 value), "fixed_large" (beta_t, with the t = 1 posterior variance at t = 0) or
"learned_range" (the model's extra channels v in [-1, 1] interpolate log beta~ .. log beta).

The sum over t runs inside one `lax.scan` (one compiled program); each KL term uses its own
draw of x_t. With `num_kl_timesteps=k` the T-1 KL terms are estimated without bias from at most
k stratified timesteps: strata with geometrically spaced edges in [1, T) (narrow at small t,
where the terms are largest), one uniform draw per stratum, weighted by the stratum's size.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxdiff.diffusion import check_prediction, extract, learned_log_variance, q_posterior, to_x0_eps
from jaxdiff.errors import ArgumentError
from jaxdiff.gaussian import discretized_gaussian_log_likelihood, normal_kl
from jaxdiff.schedules import Schedule

__all__ = [
  "VARIANCES",
  "VLBTerms",
  "bits_per_dim",
  "vlb_terms",
  "discretized_gaussian_log_likelihood",
  "normal_kl",
]

VARIANCES = ("fixed_small", "fixed_large", "learned_range")


class VLBTerms(NamedTuple):
  """Per-example terms of the bound, in bits per dimension ([B] each; kl_terms [B, K])."""

  total: jnp.ndarray
  prior: jnp.ndarray
  kl: jnp.ndarray
  decoder: jnp.ndarray
  kl_terms: jnp.ndarray  # weighted per-timestep KL terms (weights: 1 for the exact sum)
  timesteps: jnp.ndarray  # [K] the timesteps of kl_terms


class _Spec(NamedTuple):
  prediction: str
  variance: str
  clip_x0: float | None
  num_bins: int
  num_kl_timesteps: int | None


def _model_log_variance(schedule: Schedule, spec: _Spec, t, extra, shape):
  if spec.variance == "fixed_small":
    return extract(schedule.posterior_log_variance_clipped, t, shape)
  if spec.variance == "fixed_large":
    large = jnp.log(jnp.concatenate([schedule.posterior_variance[1:2], schedule.betas[1:]]))
    return extract(large, t, shape)
  return learned_log_variance(schedule, t, extra)  # the same interpolation the hybrid loss trains


def _p_mean_logvar(model_fn, schedule, spec: _Spec, x_t, t, cond):
  channels = x_t.shape[-1]
  out = model_fn(x_t, t, **cond).astype(jnp.float32)
  if spec.variance == "learned_range":
    if out.shape[-1] != 2 * channels:
      raise ArgumentError(
        f"variance='learned_range' needs a model output with 2 x {channels} channels "
        f"(prediction, variance), got {out.shape[-1]}"
      )
    extra = out[..., channels:]
  else:
    extra = None
  x0_pred, _ = to_x0_eps(schedule, x_t, t, out[..., :channels], spec.prediction)
  if spec.clip_x0 is not None:
    x0_pred = jnp.clip(x0_pred, -spec.clip_x0, spec.clip_x0)
  mean, _, _ = q_posterior(schedule, x0_pred, x_t, t)
  return mean, _model_log_variance(schedule, spec, t, extra, x_t.shape)


def _sum_dims(a):
  return jnp.sum(a.reshape(a.shape[0], -1), axis=1)


@functools.partial(jax.jit, static_argnums=(1,))
def _vlb_jit(model_fn: jax.tree_util.Partial, spec: _Spec, schedule, x0, key, cond):
  x0 = x0.astype(jnp.float32)
  batch = x0.shape[0]
  T = schedule.num_timesteps
  dims = math.prod(x0.shape[1:])
  to_bpd = 1.0 / (dims * math.log(2.0))
  k_dec, k_steps, k_t = jax.random.split(key, 3)

  def term(t, noise):
    tb = jnp.full((batch,), t, jnp.int32)
    x_t = (
      extract(schedule.sqrt_alphas_cumprod, tb, x0.shape) * x0
      + extract(schedule.sqrt_one_minus_alphas_cumprod, tb, x0.shape) * noise
    )
    mean, logvar = _p_mean_logvar(model_fn, schedule, spec, x_t, tb, cond)
    return tb, x_t, mean, logvar

  # L_0: the discretised decoder at t = 0.
  _, _, mean0, logvar0 = term(0, jax.random.normal(k_dec, x0.shape, jnp.float32))
  decoder = -_sum_dims(discretized_gaussian_log_likelihood(x0, mean0, 0.5 * logvar0, num_bins=spec.num_bins))

  # The KL terms for t = 1 .. T-1: exact (every t) or stratified.
  if spec.num_kl_timesteps is None or T < 2:
    ts = jnp.arange(1, T, dtype=jnp.int32)
    weights = jnp.ones((T - 1,), jnp.float32)
  else:
    # Geometric strata: the KL terms fall off fast with t, so small t gets narrow strata.
    k = min(int(spec.num_kl_timesteps), T - 1)
    edges = np.unique(np.round(np.geomspace(1, T, k + 1)).astype(np.int64))
    lo, hi = jnp.asarray(edges[:-1], jnp.int32), jnp.asarray(edges[1:], jnp.int32)
    ts = jax.random.randint(k_t, (len(edges) - 1,), lo, hi, dtype=jnp.int32)
    weights = (hi - lo).astype(jnp.float32)

  def step(_, inp):
    i, t, w = inp
    noise = jax.random.normal(jax.random.fold_in(k_steps, i), x0.shape, jnp.float32)
    tb, x_t, mean, logvar = term(t, noise)
    true_mean, _, true_logvar = q_posterior(schedule, x0, x_t, tb)
    return None, w * _sum_dims(normal_kl(true_mean, true_logvar, mean, logvar))

  if ts.shape[0]:
    _, kl_terms = jax.lax.scan(step, None, (jnp.arange(ts.shape[0]), ts, weights))
    kl_terms = kl_terms.T  # [B, K]
  else:
    kl_terms = jnp.zeros((batch, 0), jnp.float32)

  # L_T: q(x_T | x0) against the standard normal prior.
  tT = jnp.full((batch,), T - 1, jnp.int32)
  mean_T = extract(schedule.sqrt_alphas_cumprod, tT, x0.shape) * x0
  logvar_T = extract(schedule.log_one_minus_alphas_cumprod, tT, x0.shape)
  prior = _sum_dims(normal_kl(mean_T, logvar_T, 0.0, 0.0))

  kl = jnp.sum(kl_terms, axis=1)
  return VLBTerms(
    total=(prior + kl + decoder) * to_bpd,
    prior=prior * to_bpd,
    kl=kl * to_bpd,
    decoder=decoder * to_bpd,
    kl_terms=kl_terms * to_bpd,
    timesteps=ts,
  )


def vlb_terms(
  model_fn: Callable[..., jnp.ndarray],
  schedule: Schedule,
  x0: Any,
  key: jax.Array,
  *,
  prediction: str = "eps",
  variance: str = "fixed_small",
  cond: Mapping[str, Any] | None = None,
  clip_x0: float | None = None,
  num_bins: int = 256,
  num_kl_timesteps: int | None = None,
) -> VLBTerms:
  """The variational bound of each example of x0, term by term, in bits per dimension.

  model_fn(x_t, t, **cond) -> output in the `prediction` parameterisation ("eps" | "x0" | "v");
  with variance="learned_range" the output has twice the data's channels. Wrap Flax modules
  with `jaxdiff.bind(model.apply, params)` so the parameters are arguments of the compiled
  program. x0: [B, ...] data in [-1, 1] on `num_bins` levels (uint8 images: u / 127.5 - 1).
  clip_x0 clips the predicted x0 (improved DDPM evaluates with clipping at 1).
  num_kl_timesteps: None sums all T - 1 KL terms (T model calls per batch); k gives an unbiased
  stratified estimate from at most k of them (geometric strata, see the module docstring).
  """
  check_prediction(prediction)
  if variance not in VARIANCES:
    raise ArgumentError(f"variance must be one of {VARIANCES}, got {variance!r}")
  if num_bins < 2:
    raise ArgumentError(f"num_bins must be >= 2, got {num_bins}")
  if num_kl_timesteps is not None and int(num_kl_timesteps) < 1:
    raise ArgumentError(f"num_kl_timesteps must be None (all) or >= 1, got {num_kl_timesteps}")
  if not hasattr(x0, "shape") or len(x0.shape) < 2:
    raise ArgumentError(
      f"x0 must be a batch [B, ...] of at least 2 dimensions, got shape {getattr(x0, 'shape', None)}"
    )
  if not isinstance(x0, jax.core.Tracer):
    arr = np.asarray(x0)
    if not np.all(np.isfinite(arr)) or arr.min() < -1.0 - 1e-5 or arr.max() > 1.0 + 1e-5:
      raise ArgumentError(
        f"x0 must lie in [-1, 1] (8-bit data mapped by u / 127.5 - 1); got values in "
        f"[{arr.min():.4g}, {arr.max():.4g}]"
      )
  spec = _Spec(
    prediction,
    variance,
    None if not clip_x0 else float(clip_x0),
    int(num_bins),
    None if num_kl_timesteps is None else int(num_kl_timesteps),
  )
  # A Partial is a pytree: its bound arrays (e.g. the parameters of `jaxdiff.bind`) are traced
  # arguments and the function is static, so new parameters never recompile.
  if not isinstance(model_fn, jax.tree_util.Partial):
    model_fn = jax.tree_util.Partial(model_fn)
  return _vlb_jit(model_fn, spec, schedule, jnp.asarray(x0), key, dict(cond or {}))


def bits_per_dim(
  model_fn: Callable[..., jnp.ndarray],
  schedule: Schedule,
  x0: Any,
  key: jax.Array,
  *,
  prediction: str = "eps",
  variance: str = "fixed_small",
  cond: Mapping[str, Any] | None = None,
  clip_x0: float | None = None,
  num_bins: int = 256,
  num_kl_timesteps: int | None = None,
) -> jnp.ndarray:
  """Negative variational bound of each example of x0 in bits per dimension, [B] (see vlb_terms).

  An upper bound on the model's negative log-likelihood of the 8-bit data; average it over a
  held-out set (e.g. the digits "test" split) to report the model's bits/dim.
  """
  return vlb_terms(
    model_fn,
    schedule,
    x0,
    key,
    prediction=prediction,
    variance=variance,
    cond=cond,
    clip_x0=clip_x0,
    num_bins=num_bins,
    num_kl_timesteps=num_kl_timesteps,
  ).total
