"""The forward process, its posterior, conversions between eps / x0 / v, and the training loss.

Every function is pure and works under jit, vmap and grad. Data may have any shape whose first
axis is the batch (NHWC images, [B, 2] points, ...); `t` is an int32 array of shape [B] (or a
scalar) of timesteps in [0, T).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import optax

from jaxdiff.schedules import Schedule

__all__ = [
  "PREDICTIONS",
  "extract",
  "q_sample",
  "q_mean_variance",
  "q_posterior",
  "snr",
  "x0_from_eps",
  "eps_from_x0",
  "v_from_x0_eps",
  "x0_from_v",
  "eps_from_v",
  "v_target",
  "to_x0_eps",
  "convert_prediction",
  "loss_weight",
  "loss",
]

PREDICTIONS = ("eps", "x0", "v")
LOSS_TYPES = ("l2", "l1", "huber")
WEIGHTINGS = ("none", "p2", "min_snr")


def extract(arr: jnp.ndarray, t: jnp.ndarray, x_shape: tuple[int, ...]) -> jnp.ndarray:
  """arr[t] reshaped to broadcast against data of shape x_shape ([B] -> [B, 1, ..., 1])."""
  t = jnp.asarray(t)
  out = jnp.take(arr, t.astype(jnp.int32), axis=0)
  if t.ndim == 0:
    return out
  return out.reshape(t.shape + (1,) * (len(x_shape) - t.ndim))


def q_sample(schedule: Schedule, x0: jnp.ndarray, t: jnp.ndarray, noise: jnp.ndarray) -> jnp.ndarray:
  """x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) noise: a draw from q(x_t | x0)."""
  return (
    extract(schedule.sqrt_alphas_cumprod, t, x0.shape) * x0
    + extract(schedule.sqrt_one_minus_alphas_cumprod, t, x0.shape) * noise
  )


def q_mean_variance(schedule: Schedule, x0: jnp.ndarray, t: jnp.ndarray):
  """Mean, variance and log variance of q(x_t | x0)."""
  mean = extract(schedule.sqrt_alphas_cumprod, t, x0.shape) * x0
  var = extract(1.0 - schedule.alphas_cumprod, t, x0.shape)
  return mean, var, extract(schedule.log_one_minus_alphas_cumprod, t, x0.shape)


def q_posterior(schedule: Schedule, x0: jnp.ndarray, x_t: jnp.ndarray, t: jnp.ndarray):
  """Mean, variance and (clipped) log variance of q(x_{t-1} | x_t, x0)."""
  mean = (
    extract(schedule.posterior_mean_coef1, t, x_t.shape) * x0
    + extract(schedule.posterior_mean_coef2, t, x_t.shape) * x_t
  )
  var = extract(schedule.posterior_variance, t, x_t.shape)
  log_var = extract(schedule.posterior_log_variance_clipped, t, x_t.shape)
  return mean, var, log_var


def snr(schedule: Schedule, t: jnp.ndarray) -> jnp.ndarray:
  """Signal-to-noise ratio alpha_bar_t / (1 - alpha_bar_t), same shape as t."""
  ac = jnp.take(schedule.alphas_cumprod, jnp.asarray(t).astype(jnp.int32))
  return ac / (1.0 - ac)


# ---- conversions between parameterisations -------------------------------------------------
# With a = sqrt(alpha_bar), s = sqrt(1 - alpha_bar):  x_t = a x0 + s eps,  v = a eps - s x0.


def _a_s(schedule: Schedule, t, shape):
  return (
    extract(schedule.sqrt_alphas_cumprod, t, shape),
    extract(schedule.sqrt_one_minus_alphas_cumprod, t, shape),
  )


def x0_from_eps(schedule: Schedule, x_t, t, eps):
  """x0 = (x_t - sqrt(1 - alpha_bar) eps) / sqrt(alpha_bar)."""
  return (
    extract(schedule.sqrt_recip_alphas_cumprod, t, x_t.shape) * x_t
    - extract(schedule.sqrt_recipm1_alphas_cumprod, t, x_t.shape) * eps
  )


def eps_from_x0(schedule: Schedule, x_t, t, x0):
  """eps = (x_t - sqrt(alpha_bar) x0) / sqrt(1 - alpha_bar)."""
  a, s = _a_s(schedule, t, x_t.shape)
  return (x_t - a * x0) / s


def v_from_x0_eps(schedule: Schedule, x0, eps, t):
  """v = sqrt(alpha_bar) eps - sqrt(1 - alpha_bar) x0 (Salimans & Ho 2022)."""
  a, s = _a_s(schedule, t, x0.shape)
  return a * eps - s * x0


v_target = v_from_x0_eps


def x0_from_v(schedule: Schedule, x_t, t, v):
  """x0 = sqrt(alpha_bar) x_t - sqrt(1 - alpha_bar) v."""
  a, s = _a_s(schedule, t, x_t.shape)
  return a * x_t - s * v


def eps_from_v(schedule: Schedule, x_t, t, v):
  """eps = sqrt(1 - alpha_bar) x_t + sqrt(alpha_bar) v."""
  a, s = _a_s(schedule, t, x_t.shape)
  return s * x_t + a * v


def _check_prediction(prediction: str) -> None:
  if prediction not in PREDICTIONS:
    raise ValueError(f"prediction must be one of {PREDICTIONS}, got {prediction!r}.")


def to_x0_eps(schedule: Schedule, x_t, t, output, prediction: str = "eps"):
  """(x0, eps) implied by a network output of the given parameterisation."""
  _check_prediction(prediction)
  if prediction == "eps":
    return x0_from_eps(schedule, x_t, t, output), output
  if prediction == "x0":
    return output, eps_from_x0(schedule, x_t, t, output)
  return x0_from_v(schedule, x_t, t, output), eps_from_v(schedule, x_t, t, output)


def convert_prediction(schedule: Schedule, x_t, t, output, source: str, target: str):
  """Re-express a network output given as `source` (eps | x0 | v) as `target` (eps | x0 | v)."""
  _check_prediction(source)
  _check_prediction(target)
  if source == target:
    return output
  x0, eps = to_x0_eps(schedule, x_t, t, output, source)
  if target == "x0":
    return x0
  if target == "eps":
    return eps
  return v_from_x0_eps(schedule, x0, eps, t)


# ---- the training loss ---------------------------------------------------------------------


def loss_weight(
  schedule: Schedule,
  t,
  prediction: str = "eps",
  weighting: str = "none",
  *,
  min_snr_gamma: float = 5.0,
  p2_gamma: float = 1.0,
  p2_k: float = 1.0,
) -> jnp.ndarray:
  """Per-example weight of the `prediction`-space loss, shape [B].

  Weightings are defined on the eps-space loss and carried to the objective's space so that
  all three objectives give the same weighted loss for the same underlying prediction:
  ||x0 err||^2 = ||eps err||^2 / SNR and ||v err||^2 = ||eps err||^2 (SNR + 1) / SNR.
  min_snr: min(SNR, g)/SNR for eps, min(SNR, g) for x0, min(SNR, g)/(SNR + 1) for v (Hang et al.).
  p2: 1/(k + SNR)^gamma on the eps loss (Choi et al.). "none" weighs every objective by 1.
  """
  _check_prediction(prediction)
  if weighting not in WEIGHTINGS:
    raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {weighting!r}.")
  t = jnp.asarray(t)
  if weighting == "none":
    return jnp.ones(t.shape, jnp.float32)
  r = snr(schedule, t)
  if weighting == "min_snr":
    clipped = jnp.minimum(r, min_snr_gamma)
    if prediction == "eps":
      # limit of min(SNR, g)/SNR as SNR -> 0 is 1 (zero-terminal-SNR schedules).
      return jnp.where(r > 0, clipped / jnp.where(r > 0, r, 1.0), 1.0)
    if prediction == "x0":
      return clipped
    return clipped / (r + 1.0)
  w_eps = (p2_k + r) ** (-p2_gamma)
  if prediction == "eps":
    return w_eps
  if prediction == "x0":
    return w_eps * r
  return w_eps * r / (r + 1.0)


def _elementwise_loss(pred, target, loss_type: str, huber_delta: float):
  if loss_type == "l2":
    return jnp.square(pred - target)
  if loss_type == "l1":
    return jnp.abs(pred - target)
  if loss_type == "huber":
    return optax.losses.huber_loss(pred, target, delta=huber_delta)
  raise ValueError(f"loss_type must be one of {LOSS_TYPES}, got {loss_type!r}.")


def loss(
  model_fn: Callable[..., jnp.ndarray],
  schedule: Schedule,
  x0: jnp.ndarray,
  key: jax.Array,
  *,
  prediction: str = "eps",
  loss_type: str = "l2",
  weighting: str = "none",
  min_snr_gamma: float = 5.0,
  p2_gamma: float = 1.0,
  p2_k: float = 1.0,
  huber_delta: float = 1.0,
  offset_noise: float = 0.0,
  self_condition: bool = False,
  cond: Mapping[str, Any] | None = None,
  t: jnp.ndarray | None = None,
  noise: jnp.ndarray | None = None,
) -> tuple[jnp.ndarray, dict[str, jnp.ndarray]]:
  """The denoising training loss: draw t ~ U{0..T-1} and noise, predict, compare. Returns (loss, metrics).

  model_fn(x_t, t, **cond) returns the network output in the `prediction` parameterisation;
  with `self_condition` it also receives `x_self_cond`: zeros, or on a random half of the
  examples its own stop-gradient x0 prediction from a first pass (Chen et al., as lucidrains).
  `offset_noise` adds offset * N(0, 1) shared over the spatial axes (per example and channel).
  `t` and `noise` may be given to fix them (tests, importance sampling).
  """
  _check_prediction(prediction)
  cond = dict(cond or {})
  batch = x0.shape[0]
  k_t, k_noise, k_offset, k_sc = jax.random.split(key, 4)
  if t is None:
    t = jax.random.randint(k_t, (batch,), 0, schedule.num_timesteps, dtype=jnp.int32)
  if noise is None:
    noise = jax.random.normal(k_noise, x0.shape, x0.dtype)
    if offset_noise:
      off_shape = (batch,) + (1,) * (x0.ndim - 2) + (x0.shape[-1],) if x0.ndim > 2 else x0.shape[:1] + (1,)
      noise = noise + offset_noise * jax.random.normal(k_offset, off_shape, x0.dtype)
  x_t = q_sample(schedule, x0, t, noise)

  if self_condition:
    first = model_fn(x_t, t, x_self_cond=jnp.zeros_like(x0), **cond)
    x0_first, _ = to_x0_eps(schedule, x_t, t, first[..., : x0.shape[-1]], prediction)
    use = jax.random.bernoulli(k_sc, 0.5, (batch,)).reshape((batch,) + (1,) * (x0.ndim - 1))
    cond["x_self_cond"] = jnp.where(use, jax.lax.stop_gradient(x0_first), 0.0)
  out = model_fn(x_t, t, **cond)
  out = out[..., : x0.shape[-1]]  # a learned-variance output carries extra channels
  if prediction == "eps":
    target = noise
  elif prediction == "x0":
    target = x0
  else:
    target = v_from_x0_eps(schedule, x0, noise, t)

  per_elem = _elementwise_loss(out.astype(jnp.float32), target.astype(jnp.float32), loss_type, huber_delta)
  per_example = jnp.mean(per_elem.reshape(batch, -1), axis=1)
  w = loss_weight(
    schedule, t, prediction, weighting, min_snr_gamma=min_snr_gamma, p2_gamma=p2_gamma, p2_k=p2_k
  )
  total = jnp.mean(w * per_example)
  # Unweighted loss by quarter of the timestep range: where the model is (not) learning.
  quarter = jnp.minimum(t * 4 // schedule.num_timesteps, 3)
  metrics = {"loss": total, "loss_unweighted": jnp.mean(per_example)}
  for q in range(4):
    m = (quarter == q).astype(jnp.float32)
    metrics[f"loss_q{q}"] = jnp.sum(m * per_example) / jnp.maximum(jnp.sum(m), 1.0)
  return total, metrics
