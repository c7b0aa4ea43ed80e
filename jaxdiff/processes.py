"""Gaussian diffusion processes x_t = alpha(t) x0 + sigma(t) eps, each in its own time unit.

A process is data (a frozen pytree) passed to the pure functions of `jaxdiff.diffusion` and
`jaxdiff.samplers`. Every process answers the same few questions: alpha and sigma at a time, the
time at which sigma/alpha takes a value, its default sampling grid, how the loss draws times, and
the frame in which Euler/Heun integrate the probability-flow ODE. A `jaxdiff.schedules.Schedule`
is accepted wherever a process is (`as_process` wraps it as the discrete VP chain).
"""

from __future__ import annotations

import math
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np

from jaxdiff import grids
from jaxdiff.errors import ArgumentError
from jaxdiff.schedules import Schedule

__all__ = [
  "Process",
  "DiscreteVP",
  "VPSDE",
  "CosineVP",
  "EDM",
  "RectifiedFlow",
  "PROCESSES",
  "FRAMES",
  "TIME_SAMPLINGS",
  "as_process",
  "is_discrete",
]

FRAMES = ("sigma", "flow")
TIME_SAMPLINGS = ("uniform", "log_normal", "logit_normal")


class Process:
  """Interface shared by every process (the concrete classes are flax pytrees).

  alpha_sigma(t) -> (alpha, sigma): arrays of t's shape, float64 for float64 t, else float32.
  time_at(ratio) -> t: the time whose sigma/alpha equals `ratio` (inverse of the noise level).
  default_grid(n) -> descending numpy times of a sampler's n model evaluations.
  prior_std(t): the std of the state the reverse process starts from at time t.
  frame: "sigma" (Euler/Heun in x/alpha against sigma/alpha, as k-diffusion and EDM) or
    "flow" (in x/(alpha+sigma) against sigma/(alpha+sigma), as the flow-matching schedulers).
  """

  frame = "flow"
  discrete = False
  default_time_sampling = "uniform"
  sigma_data = 0.5

  def alpha_sigma(self, t):
    raise NotImplementedError

  def time_at(self, ratio):
    raise NotImplementedError

  def default_grid(self, n: int) -> np.ndarray:
    return grids.uniform(self, n)

  def prior_std(self, t):
    return 1.0

  @property
  def t_max(self) -> float:
    """The noisiest time of the default grids (1 for processes on the unit interval)."""
    return 1.0

  @property
  def t_min(self) -> float:
    """The least noisy time a grid may hold (0 for processes on the unit interval)."""
    return 0.0

  def check_times(self, ts: np.ndarray) -> None:
    """Refuse grid times outside the process's range or at clean data (numpy, static grids only)."""
    with jax.ensure_compile_time_eval():  # a static grid, also while an outer jit traces
      _, sig = self.alpha_sigma(np.asarray(ts, np.float32))
    if np.any(np.asarray(sig) <= 0):
      raise ArgumentError(
        f"grid times must have sigma > 0 for {type(self).__name__}; {ts[np.asarray(sig) <= 0]} are clean "
        "data. Drop them: the last step lands on clean data by itself."
      )
    lo, hi = self.t_min, self.t_max
    if np.any(ts < lo - 1e-6 * max(1.0, abs(lo))) or np.any(ts > hi + 1e-6 * max(1.0, abs(hi))):
      raise ArgumentError(
        f"grid times must lie in [{lo}, {hi}] for {type(self).__name__}; got min {ts.min()}, max {ts.max()}."
      )

  def sample_time(self, key: jax.Array, batch: int, time_sampling: str | None = None, **kw: Any):
    """Times for the training loss: uniform on [t_min, t_max] unless the process says otherwise."""
    how = time_sampling or self.default_time_sampling
    if how != "uniform":
      raise ArgumentError(f"{type(self).__name__} draws training times 'uniform'; got time_sampling={how!r}.")
    return jax.random.uniform(key, (batch,), jnp.float32, self.t_min, self.t_max)


def _f32(x):
  return jnp.asarray(x, jnp.float32)


def _float(t):
  """t as a float array: float64 stays float64 (with jax_enable_x64), anything else becomes float32."""
  t = jnp.asarray(t)
  return t if t.dtype == jnp.float64 else t.astype(jnp.float32)


@flax.struct.dataclass
class DiscreteVP(Process):
  """The discrete DDPM chain of a `Schedule`: t is a timestep in [0, T), t = -1 is clean data.

  Integer t reads the table exactly; a fractional t interpolates log(sigma/alpha) linearly between
  the neighbouring timesteps (as k-diffusion's and diffusers' interpolated sigmas do).
  """

  schedule: Schedule
  frame = "flow"
  discrete = True

  @property
  def num_timesteps(self) -> int:
    return self.schedule.num_timesteps

  @property
  def t_max(self) -> float:
    return float(self.schedule.num_timesteps - 1)

  @property
  def t_min(self) -> float:
    return 0.0

  def _log_ratio_table(self):
    """log(sigma / alpha) per timestep, from the float64-built tables (exact at small t too)."""
    s = self.schedule
    return jnp.log(s.sqrt_one_minus_alphas_cumprod) - jnp.log(s.sqrt_alphas_cumprod)

  def alpha_sigma(self, t):
    t = jnp.asarray(t)
    T = self.schedule.num_timesteps
    sched = self.schedule

    def table(i):  # the float64-built tables: sigma exact at small t (1 - abar loses digits in float32)
      i = jnp.clip(i, 0, T - 1)
      return jnp.take(sched.sqrt_alphas_cumprod, i), jnp.take(sched.sqrt_one_minus_alphas_cumprod, i)

    if jnp.issubdtype(t.dtype, jnp.integer):
      a, s = table(t)
      return _f32(jnp.where(t < 0, 1.0, a)), _f32(jnp.where(t < 0, 0.0, s))
    t = _float(t)
    lo = jnp.clip(jnp.floor(t), 0, T - 1).astype(jnp.int32)
    hi = jnp.minimum(lo + 1, T - 1)
    w = jnp.clip(t - lo, 0.0, 1.0)
    tab = self._log_ratio_table()
    log_r = (1.0 - w) * jnp.take(tab, lo) + w * jnp.take(tab, hi)
    a_lo, s_lo = table(lo)
    # alpha^2 = 1 / (1 + r^2), sigma^2 = r^2 / (1 + r^2)
    a = jnp.where(w == 0.0, a_lo, jnp.sqrt(jax.nn.sigmoid(-2.0 * log_r)))
    s = jnp.where(w == 0.0, s_lo, jnp.sqrt(jax.nn.sigmoid(2.0 * log_r)))
    return (jnp.where(t < 0, 1.0, a).astype(t.dtype), jnp.where(t < 0, 0.0, s).astype(t.dtype))

  def time_at(self, ratio):
    tab = self._log_ratio_table()
    target = jnp.log(_float(ratio))
    T = self.schedule.num_timesteps
    j = jnp.clip(jnp.searchsorted(tab, target), 1, T - 1)
    lo, hi = jnp.take(tab, j - 1), jnp.take(tab, j)
    w = jnp.clip((target - lo) / jnp.where(hi > lo, hi - lo, 1.0), 0.0, 1.0)
    return (j - 1 + w).astype(target.dtype)

  def default_grid(self, n: int) -> np.ndarray:
    return grids.spacing(self.schedule.num_timesteps, n, "leading")

  def sample_time(self, key, batch, time_sampling=None, **kw):
    how = time_sampling or "uniform"
    if how != "uniform":
      raise ArgumentError(f"a discrete chain draws uniform integer timesteps; got time_sampling={how!r}.")
    return jax.random.randint(key, (batch,), 0, self.schedule.num_timesteps, dtype=jnp.int32)


@flax.struct.dataclass
class VPSDE(Process):
  """score_sde's continuous VP SDE: log abar(t) = -(beta_min t + (beta_max - beta_min) t^2 / 2).

  Sampling grids end at t_min (score_sde's eps = 1e-3); training draws t uniformly in [t_min, 1].
  """

  beta_min: float = flax.struct.field(pytree_node=False, default=0.1)
  beta_max: float = flax.struct.field(pytree_node=False, default=20.0)
  t_min: float = flax.struct.field(pytree_node=False, default=1e-3)

  def _log_abar(self, t):
    return -(self.beta_min * t + 0.5 * (self.beta_max - self.beta_min) * t * t)

  def alpha_sigma(self, t):
    la = self._log_abar(_float(t))
    return jnp.exp(0.5 * la), jnp.sqrt(-jnp.expm1(la))

  def time_at(self, ratio):
    # abar = 1 / (1 + r^2): solve (beta_max - beta_min) t^2 / 2 + beta_min t - log(1 + r^2) = 0.
    c = jnp.log1p(jnp.square(_float(ratio)))
    a = 0.5 * (self.beta_max - self.beta_min)
    if a == 0:
      return c / self.beta_min
    return (-self.beta_min + jnp.sqrt(self.beta_min**2 + 4.0 * a * c)) / (2.0 * a)


@flax.struct.dataclass
class CosineVP(Process):
  """Continuous cosine VP (improved DDPM / simple diffusion): logSNR = -2 log tan(pi u / 2) + 2 log(shift).

  `shift` < 1 moves noise levels up for high resolutions (simple diffusion: shift = 64 / resolution).
  As simple diffusion does, t in [0, 1] maps linearly onto the u whose log-SNR spans
  [logsnr_max, logsnr_min], so both ends are finite.
  """

  logsnr_min: float = flax.struct.field(pytree_node=False, default=-15.0)
  logsnr_max: float = flax.struct.field(pytree_node=False, default=15.0)
  shift: float = flax.struct.field(pytree_node=False, default=1.0)

  def _t_bounds(self):
    s = 2.0 * math.log(self.shift)
    t_lo = math.atan(math.exp(-0.5 * (self.logsnr_max - s))) * 2.0 / math.pi
    t_hi = math.atan(math.exp(-0.5 * (self.logsnr_min - s))) * 2.0 / math.pi
    return t_lo, t_hi

  def logsnr(self, t):
    t_lo, t_hi = self._t_bounds()
    t = t_lo + _float(t) * (t_hi - t_lo)
    return -2.0 * jnp.log(jnp.tan(0.5 * math.pi * t)) + 2.0 * math.log(self.shift)

  def alpha_sigma(self, t):
    lam = self.logsnr(t)
    return jnp.sqrt(jax.nn.sigmoid(lam)), jnp.sqrt(jax.nn.sigmoid(-lam))

  def time_at(self, ratio):
    lam = -2.0 * jnp.log(_float(ratio))
    t_lo, t_hi = self._t_bounds()
    u = jnp.arctan(jnp.exp(-0.5 * (lam - 2.0 * math.log(self.shift)))) * 2.0 / math.pi
    return (u - t_lo) / (t_hi - t_lo)


@flax.struct.dataclass
class EDM(Process):
  """Karras et al. 2022: alpha = 1, sigma = t; the model time is sigma itself."""

  sigma_data: float = flax.struct.field(pytree_node=False, default=0.5)
  sigma_min: float = flax.struct.field(pytree_node=False, default=0.002)
  sigma_max: float = flax.struct.field(pytree_node=False, default=80.0)
  rho: float = flax.struct.field(pytree_node=False, default=7.0)
  p_mean: float = flax.struct.field(pytree_node=False, default=-1.2)
  p_std: float = flax.struct.field(pytree_node=False, default=1.2)
  frame = "sigma"
  default_time_sampling = "log_normal"

  def alpha_sigma(self, t):
    t = _float(t)
    return jnp.ones_like(t), t

  def time_at(self, ratio):
    return _float(ratio)

  def default_grid(self, n: int) -> np.ndarray:
    return grids.karras(n, self.sigma_min, self.sigma_max, self.rho)

  def prior_std(self, t):
    return t

  @property
  def t_max(self) -> float:
    return float(self.sigma_max)

  @property
  def t_min(self) -> float:
    return float(self.sigma_min)

  def check_times(self, ts):
    if np.any(ts <= 0):
      raise ArgumentError(f"EDM grid times are noise levels sigma > 0; got min {ts.min()}.")

  def sample_time(self, key, batch, time_sampling=None, **kw):
    how = time_sampling or "log_normal"
    if how != "log_normal":
      raise ArgumentError(f"EDM draws log-normal sigma (P_mean, P_std); got time_sampling={how!r}.")
    return jnp.exp(self.p_mean + self.p_std * jax.random.normal(key, (batch,), jnp.float32))


@flax.struct.dataclass
class RectifiedFlow(Process):
  """Rectified flow / flow matching: x_t = (1 - t) x0 + t eps, t in [0, 1]; the velocity is eps - x0.

  `shift` is SD3's time shift of the default sampling grid (`grids.flow`); training draws t
  uniformly or logit-normally (SD3: m = 0, s = 1).
  """

  shift: float = flax.struct.field(pytree_node=False, default=1.0)
  logit_mean: float = flax.struct.field(pytree_node=False, default=0.0)
  logit_std: float = flax.struct.field(pytree_node=False, default=1.0)

  def alpha_sigma(self, t):
    t = _float(t)
    return 1.0 - t, t

  def time_at(self, ratio):
    r = _float(ratio)
    return r / (1.0 + r)

  def default_grid(self, n: int) -> np.ndarray:
    return grids.flow(n, self.shift)

  def prior_std(self, t):
    return t

  def sample_time(self, key, batch, time_sampling=None, **kw):
    how = time_sampling or "uniform"
    if how == "uniform":
      return jax.random.uniform(key, (batch,), jnp.float32)
    if how == "logit_normal":
      return jax.nn.sigmoid(self.logit_mean + self.logit_std * jax.random.normal(key, (batch,), jnp.float32))
    raise ArgumentError(f"RectifiedFlow draws t 'uniform' or 'logit_normal'; got time_sampling={how!r}.")


PROCESSES = {"vp": DiscreteVP, "vpsde": VPSDE, "cosine": CosineVP, "edm": EDM, "flow": RectifiedFlow}


def as_process(process: Any) -> Process:
  """The process itself, or a Schedule as the discrete VP chain."""
  if isinstance(process, Process):
    return process
  if isinstance(process, Schedule):
    return DiscreteVP(process)
  raise TypeError(
    f"expected a jaxdiff process (jaxdiff.processes.*) or a jaxdiff.schedules.Schedule, "
    f"got {type(process).__name__}."
  )


def is_discrete(process: Any) -> bool:
  return isinstance(process, Schedule) or getattr(process, "discrete", False)


grids.register_process_converter(as_process)
