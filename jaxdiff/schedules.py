"""Noise schedules: per-timestep arrays of the discrete forward process, as an immutable pytree.

Every constructor computes in float64 (numpy) and stores float32, so that cumulative products
over 1000 steps are as exact as float32 can hold. A `Schedule` is data: pass it to the pure
functions of `jaxdiff.diffusion` and `jaxdiff.samplers`; it can be an argument of `jax.jit`.
"""

from __future__ import annotations

import inspect
import math
from typing import Any

import flax
import jax.numpy as jnp
import numpy as np

from jaxdiff.errors import ArgumentError

__all__ = [
  "Schedule",
  "from_betas",
  "linear",
  "cosine",
  "sigmoid",
  "quadratic",
  "rescale_zero_terminal_snr",
  "get_schedule",
]


@flax.struct.dataclass
class Schedule:
  """Per-timestep quantities of q(x_t | x_0) and q(x_{t-1} | x_t, x_0), indexed by t in [0, T).

  Timestep t (0-based) has noise level beta_t; alphas_cumprod[t] = prod_{s<=t} (1 - beta_s).
  `alphas_cumprod_prev[0]` is 1 (x_{-1} is the data itself).
  """

  betas: jnp.ndarray
  alphas: jnp.ndarray
  alphas_cumprod: jnp.ndarray
  alphas_cumprod_prev: jnp.ndarray
  sqrt_alphas_cumprod: jnp.ndarray
  sqrt_one_minus_alphas_cumprod: jnp.ndarray
  log_one_minus_alphas_cumprod: jnp.ndarray
  sqrt_recip_alphas_cumprod: jnp.ndarray
  sqrt_recipm1_alphas_cumprod: jnp.ndarray
  posterior_variance: jnp.ndarray
  posterior_log_variance_clipped: jnp.ndarray
  posterior_mean_coef1: jnp.ndarray
  posterior_mean_coef2: jnp.ndarray
  num_timesteps: int = flax.struct.field(pytree_node=False)

  def __len__(self) -> int:
    return self.num_timesteps


def _check_betas(betas: np.ndarray, allow_terminal_one: bool = False) -> np.ndarray:
  betas = np.asarray(betas, dtype=np.float64)
  if betas.ndim != 1:
    raise ArgumentError(f"betas must be a 1-D array of per-timestep noise levels, got shape {betas.shape}.")
  if betas.shape[0] < 1:
    raise ArgumentError("A schedule needs at least one timestep (T >= 1); got an empty betas array.")
  if not np.all(np.isfinite(betas)):
    raise ArgumentError("betas contain NaN or Inf.")
  body = betas[:-1] if allow_terminal_one else betas
  bad = np.nonzero((body <= 0.0) | (body >= 1.0))[0]
  if allow_terminal_one and not (0.0 < betas[-1] <= 1.0):
    bad = np.append(bad, betas.shape[0] - 1)
  if bad.size:
    i = int(bad[0])
    raise ArgumentError(
      f"betas must lie in the open interval (0, 1); betas[{i}] = {betas[i]!r} "
      f"({bad.size} value(s) out of range). Check beta_start/beta_end or the custom betas."
    )
  return betas


def _build(betas: np.ndarray, allow_terminal_one: bool = False) -> Schedule:
  """All derived arrays from validated float64 betas."""
  betas = _check_betas(betas, allow_terminal_one)
  alphas = 1.0 - betas
  ac = np.cumprod(alphas)
  if np.any(np.diff(ac) >= 0) or ac[0] >= 1.0:
    raise ArgumentError("alphas_cumprod must be strictly decreasing (every beta in (0, 1)); it is not.")
  ac_prev = np.append(1.0, ac[:-1])
  with np.errstate(divide="ignore"):
    one_minus = 1.0 - ac
    post_var = betas * (1.0 - ac_prev) / one_minus
    # log of the posterior variance, clipped because it is 0 at t = 0 (improved DDPM convention).
    post_log_var = (
      np.log(np.append(post_var[1], post_var[1:])) if len(betas) > 1 else np.log(np.maximum(post_var, 1e-20))
    )
    sqrt_recip = 1.0 / np.sqrt(ac)
    sqrt_recipm1 = np.sqrt(1.0 / ac - 1.0)
    log_one_minus = np.log(one_minus)
  coef1 = betas * np.sqrt(ac_prev) / one_minus
  coef2 = (1.0 - ac_prev) * np.sqrt(alphas) / one_minus
  f32 = lambda a: jnp.asarray(np.asarray(a, np.float64), dtype=jnp.float32)
  return Schedule(
    betas=f32(betas),
    alphas=f32(alphas),
    alphas_cumprod=f32(ac),
    alphas_cumprod_prev=f32(ac_prev),
    sqrt_alphas_cumprod=f32(np.sqrt(ac)),
    sqrt_one_minus_alphas_cumprod=f32(np.sqrt(one_minus)),
    log_one_minus_alphas_cumprod=f32(log_one_minus),
    sqrt_recip_alphas_cumprod=f32(sqrt_recip),
    sqrt_recipm1_alphas_cumprod=f32(sqrt_recipm1),
    posterior_variance=f32(post_var),
    posterior_log_variance_clipped=f32(post_log_var),
    posterior_mean_coef1=f32(coef1),
    posterior_mean_coef2=f32(coef2),
    num_timesteps=int(betas.shape[0]),
  )


def _check_T(T: Any) -> int:
  if isinstance(T, bool) or not isinstance(T, (int, np.integer)) or T < 1:
    raise ArgumentError(f"num_timesteps T must be an integer >= 1, got {T!r}.")
  return int(T)


def from_betas(betas: Any) -> Schedule:
  """A schedule from explicit per-timestep betas (each in (0, 1))."""
  return _build(np.asarray(betas, dtype=np.float64))


def linear(T: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> Schedule:
  """DDPM's linear schedule: betas evenly spaced from beta_start to beta_end."""
  T = _check_T(T)
  return _build(np.linspace(beta_start, beta_end, T, dtype=np.float64))


def quadratic(T: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> Schedule:
  """sqrt(beta) evenly spaced (diffusers' "scaled_linear", as in latent diffusion)."""
  T = _check_T(T)
  if beta_start < 0 or beta_end < 0:
    raise ArgumentError(f"quadratic schedule needs beta_start, beta_end >= 0; got {beta_start}, {beta_end}.")
  return _build(np.linspace(math.sqrt(beta_start), math.sqrt(beta_end), T, dtype=np.float64) ** 2)


def sigmoid(
  T: int, beta_start: float = 1e-4, beta_end: float = 0.02, start: float = -6.0, end: float = 6.0
) -> Schedule:
  """Betas from a sigmoid over a linear ramp: beta_start + sigmoid(linspace(start, end, T)) * (beta_end - beta_start).

  This is the schedule of lucidrains' early denoising-diffusion and of the S-curve tutorial
  (which uses `sigmoid(100, beta_start=1e-5, beta_end=5e-3)`).
  """
  T = _check_T(T)
  if not start < end:
    raise ArgumentError(f"sigmoid schedule needs start < end, got start={start}, end={end}.")
  ramp = np.linspace(start, end, T, dtype=np.float64)
  return _build(beta_start + (beta_end - beta_start) / (1.0 + np.exp(-ramp)))


def cosine(T: int, s: float = 0.008, max_beta: float = 0.999) -> Schedule:
  """Improved DDPM's cosine schedule: alpha_bar(t) = cos^2((t/T + s)/(1 + s) * pi/2), betas clipped at max_beta."""
  T = _check_T(T)
  if not 0.0 < max_beta < 1.0:
    raise ArgumentError(f"max_beta must be in (0, 1), got {max_beta}.")
  if s < 0:
    raise ArgumentError(f"cosine offset s must be >= 0, got {s}.")
  steps = np.arange(T + 1, dtype=np.float64) / T
  f = np.cos((steps + s) / (1.0 + s) * math.pi / 2.0) ** 2
  betas = np.minimum(1.0 - f[1:] / f[:-1], max_beta)
  return _build(betas)


def rescale_zero_terminal_snr(schedule: Schedule) -> Schedule:
  """Lin et al. 2023, Algorithm 1: shift and scale sqrt(alpha_bar) so the last step has SNR exactly 0.

  The first step keeps its value; the final beta becomes 1 (pure noise at t = T-1). Train such
  models with `prediction="v"`: eps prediction cannot recover x0 where alpha_bar = 0.
  """
  if schedule.num_timesteps < 2:
    raise ArgumentError("rescale_zero_terminal_snr needs at least 2 timesteps.")
  betas = np.asarray(schedule.betas, dtype=np.float64)
  s = np.sqrt(np.cumprod(1.0 - betas))
  s0, sT = s[0], s[-1]
  s = (s - sT) * s0 / (s0 - sT)
  ac = s**2
  alphas = np.append(ac[0], ac[1:] / ac[:-1])
  return _build(1.0 - alphas, allow_terminal_one=True)


def get_schedule(name: str, T: int, **kwargs: Any) -> Schedule:
  """A schedule by name ("linear", "cosine", "sigmoid", "quadratic"), as configs name them.

  Keyword arguments a schedule does not take (e.g. beta_start for cosine) are ignored, so a
  config can carry them all.
  """
  makers = {"linear": linear, "cosine": cosine, "sigmoid": sigmoid, "quadratic": quadratic}
  if name not in makers:
    raise ArgumentError(f"Unknown schedule {name!r}; choose one of {sorted(makers)}.")
  params = inspect.signature(makers[name]).parameters
  return makers[name](T, **{k: v for k, v in kwargs.items() if k in params})
