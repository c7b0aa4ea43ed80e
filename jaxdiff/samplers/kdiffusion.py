"""k-diffusion's remaining samplers: lms, dpm_2, dpm_2_ancestral, dpmpp_sde and dpm_adaptive.

Each works in k-diffusion's frame on any process: x~ = x / alpha against the noise level
s = sigma / alpha, where the denoiser's eps is dx~/ds. Levels between the grid's (a midpoint, an
adaptive step) are evaluated at the process time `time_at(s)`, alpha and sigma recomputed there.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxdiff.errors import SamplingError
from jaxdiff.samplers.base import Sampler, State, ddim_update, register, static
from jaxdiff.samplers.single_step import EulerAncestral, _Churn

__all__ = ["LMS", "DPM2", "DPM2Ancestral", "DPMSolverPPSDE", "DPMAdaptive", "NOISE_STREAM_SDE_MID"]

# dpmpp_sde's noise at the step's intermediate level (the step's own is the plain stream)
NOISE_STREAM_SDE_MID = 2
_GAUSS_NODES, _GAUSS_WEIGHTS = np.polynomial.legendre.leggauss(4)  # exact for the cubic Lagrange bases


def _eps_at(ctx, x_t, s, x_sc):
  """The denoiser at noise level s = sigma / alpha (between grid levels): (eps, x0) for x~ = x_t."""
  t = ctx.process.time_at(s)
  a, sg = (v.astype(x_t.dtype) for v in ctx.process.alpha_sigma(t))
  d = ctx.denoise(a * x_t, t, a, sg, x_sc)
  return d.eps, d.x0


def _ancestral(s, s_next, eta):
  """k-diffusion's get_ancestral_step: (sigma_down, sigma_up) for a step from s to s_next."""
  up = jnp.sqrt(jnp.maximum(jnp.square(s_next) * (jnp.square(s) - jnp.square(s_next)) / jnp.square(s), 0.0))
  s_up = jnp.minimum(s_next, eta * up)
  return jnp.sqrt(jnp.maximum(jnp.square(s_next) - jnp.square(s_up), 0.0)), s_up


def _lagrange_integrals(s, s_next, order: int):
  """[n, order] weights w_ij = integral over [s_i, s_i+1] of the Lagrange basis of s_{i-j} through
  s_i .. s_{i-k+1}, k = min(i + 1, order) (k-diffusion's linear_multistep_coeff, exactly)."""
  n = s.shape[0]
  past = [jnp.concatenate([jnp.full((k,), jnp.nan, s.dtype), s])[:n] for k in range(order)]
  mid, half = 0.5 * (s + s_next), 0.5 * (s_next - s)
  taus = [mid + half * float(u) for u in _GAUSS_NODES]
  out = jnp.zeros((n, order), s.dtype)
  i = jnp.arange(n)
  for k in range(1, order + 1):  # k points: the rows with min(i + 1, order) == k
    rows = (jnp.minimum(i + 1, order) == k)[:, None]
    cols = []
    for j in range(order):
      if j >= k:
        cols.append(jnp.zeros_like(s))
        continue
      total = jnp.zeros_like(s)
      for tau, w in zip(taus, _GAUSS_WEIGHTS):
        prod = jnp.ones_like(s)
        for m in range(k):
          if m != j:
            prod = prod * (tau - past[m]) / (past[j] - past[m])
        total = total + float(w) * prod
      cols.append(half * total)
    out = jnp.where(rows, jnp.stack(cols, 1), out)
  return out


@register
class LMS(Sampler):
  """k-diffusion's linear multistep method: x~' = x~ + sum_j c_j eps_{i-j}, the c_j integrals of the
  Lagrange polynomial through the last `order` noise levels (first steps of lower order)."""

  name = "lms"
  inpaint = False

  order: int = static(4)

  def check_options(self):
    if self.order not in (1, 2, 3, 4):
      raise SamplingError(f"lms order must be 1, 2, 3 or 4, got {self.order!r}.")

  def prepare(self, alpha, sigma, alpha_next, sigma_next):
    return {"lms": _lagrange_integrals(sigma / alpha, sigma_next / alpha_next, int(self.order))}

  def init(self, x):
    return tuple(jnp.zeros_like(x) for _ in range(int(self.order) - 1))

  def step(self, ctx, state, inp, final):
    d = ctx.denoise(state.x, inp.t, inp.alpha, inp.sigma, state.x0)
    eps = (d.eps,) + state.aux
    x_t = state.x / inp.alpha
    coef = inp.extra["lms"]
    for j, e in enumerate(eps):
      x_t = x_t + coef[j] * e
    return State(inp.alpha_next * x_t, d.x0, eps[:-1]), d.x0


def _dpm2_update(ctx, x_t, s, s_to, eps, x0):
  """DPM-Solver-2 in k-diffusion's form: Euler to the geometric midpoint, its slope over the whole step."""
  s_mid = jnp.exp(0.5 * (jnp.log(s) + jnp.log(s_to)))
  eps2, _ = _eps_at(ctx, x_t + eps * (s_mid - s), s_mid, x0)
  return x_t + eps2 * (s_to - s)


@register
class DPM2(_Churn):
  """k-diffusion's sample_dpm_2: the midpoint (in log sigma) method, with EDM's churn; the last step
  to clean data is Euler. 2n - 1 evaluations."""

  name = "dpm_2"
  inpaint = False
  split_final = True
  finite_top = True

  def nfe(self, num_steps):
    return 2 * int(num_steps) - 1

  def step(self, ctx, state, inp, final):
    x, t, a, s = self.churn(ctx, state.x, inp)
    d = ctx.denoise(x, t, a, s, state.x0)
    if final:
      return State(ddim_update(inp.alpha_next, inp.sigma_next, d.x0, d.eps), d.x0, state.aux), d.x0
    x_t = _dpm2_update(ctx, x / a, s / a, inp.sigma_next / inp.alpha_next, d.eps, d.x0)
    return State(inp.alpha_next * x_t, d.x0, state.aux), d.x0


@register
class DPM2Ancestral(EulerAncestral):
  """k-diffusion's sample_dpm_2_ancestral: DPM-Solver-2 down to sigma_down, then fresh noise sigma_up;
  the last step to clean data is Euler. 2n - 1 evaluations."""

  name = "dpm_2_ancestral"
  inpaint = False
  split_final = True

  def nfe(self, num_steps):
    return 2 * int(num_steps) - 1

  def step(self, ctx, state, inp, final):
    d = ctx.denoise(state.x, inp.t, inp.alpha, inp.sigma, state.x0)
    if final:
      return State(ddim_update(inp.alpha_next, inp.sigma_next, d.x0, d.eps), d.x0, state.aux), d.x0
    s, s_n = inp.sigma / inp.alpha, inp.sigma_next / inp.alpha_next
    down, up = _ancestral(s, s_n, self.eta)
    x_t = _dpm2_update(ctx, state.x / inp.alpha, s, down, d.eps, d.x0)
    x_t = x_t + ctx.noise(inp.index, state.x.shape) * self.s_noise * up
    return State(inp.alpha_next * x_t, d.x0, state.aux), d.x0


@register
class DPMSolverPPSDE(Sampler):
  """k-diffusion's sample_dpmpp_sde: DPM-Solver++ (stochastic, second order, midpoint r), each half
  an ancestral step with its own fresh noise (k-diffusion's default draws it from a Brownian tree);
  the last step to clean data is Euler. 2n - 1 evaluations."""

  name = "dpmpp_sde"
  inpaint = False
  split_final = True

  eta: float = 1.0
  s_noise: float = 1.0
  r: float = 0.5

  def check_options(self):
    for k in ("eta", "s_noise"):
      v = self.number(k)
      if v is not None and not v >= 0:
        raise SamplingError(f"{k} must be a number >= 0, got {getattr(self, k)!r}.")
    r = self.number("r")
    if r is not None and not 0 < r <= 1:
      raise SamplingError(f"r must be in (0, 1], got {self.r!r}.")

  def nfe(self, num_steps):
    return 2 * int(num_steps) - 1

  def step(self, ctx, state, inp, final):
    d = ctx.denoise(state.x, inp.t, inp.alpha, inp.sigma, state.x0)
    if final:
      return State(ddim_update(inp.alpha_next, inp.sigma_next, d.x0, d.eps), d.x0, state.aux), d.x0
    eta, s_noise, r = self.eta, self.s_noise, self.r
    x_t = state.x / inp.alpha
    s, s_n = inp.sigma / inp.alpha, inp.sigma_next / inp.alpha_next
    lam, lam_n = -jnp.log(s), -jnp.log(s_n)
    s_mid = jnp.exp(-(lam + r * (lam_n - lam)))
    down, up = _ancestral(s, s_mid, eta)
    x2 = (down / s) * x_t - jnp.expm1(lam + jnp.log(down)) * d.x0
    x2 = x2 + ctx.noise(inp.index, x_t.shape, stream=NOISE_STREAM_SDE_MID) * s_noise * up
    _, x0_2 = _eps_at(ctx, x2, s_mid, d.x0)
    down, up = _ancestral(s, s_n, eta)
    fac = 1.0 / (2.0 * r)
    m = (1.0 - fac) * d.x0 + fac * x0_2
    x_t = (down / s) * x_t - jnp.expm1(lam + jnp.log(down)) * m
    x_t = x_t + ctx.noise(inp.index, x_t.shape) * s_noise * up
    return State(inp.alpha_next * x_t, d.x0, state.aux), d.x0


class _Adaptive(NamedTuple):
  x: jnp.ndarray
  x_prev: jnp.ndarray
  lam: jnp.ndarray  # -log s where the state is
  h: jnp.ndarray  # the step size the controller proposes
  errs: jnp.ndarray  # the controller's last three inverse errors
  first: jnp.ndarray  # no error seen yet
  steps: jnp.ndarray  # iterations (accepted and rejected)
  x0: jnp.ndarray


@register
class DPMAdaptive(Sampler):
  """k-diffusion's sample_dpm_adaptive (DPM-Solver-12/23 with a PID step-size controller) from the
  grid's first level to its last, then one Euler step to clean data.

  Its default grid is the process's two ends; with a longer grid it integrates adaptively between
  each pair of levels. The loop is a `lax.while_loop` of at most `max_steps` iterations per grid
  step, each `order` evaluations, plus one at each grid level: `nfe()` reports that upper bound (the
  count a run takes depends on the data and the tolerances).
  """

  name = "dpm_adaptive"
  inpaint = False
  split_final = True

  order: int = static(3)
  rtol: float = 0.05
  atol: float = 0.0078
  h_init: float = 0.05
  accept_safety: float = 0.81
  max_steps: int = static(1000)  # the while_loop's bound, which `nfe` reports
  # the PID controller's exponents (static: XLA simplifies the powers 0 and 1 of the default)
  pcoeff: float = static(0.0)
  icoeff: float = static(1.0)
  dcoeff: float = static(0.0)

  def check_options(self):
    if self.order not in (2, 3):
      raise SamplingError(f"dpm_adaptive order must be 2 or 3, got {self.order!r}.")
    if not (isinstance(self.max_steps, int) and self.max_steps >= 1):
      raise SamplingError(f"max_steps must be an integer >= 1, got {self.max_steps!r}.")

  def default_grid(self, process, n):
    full = np.asarray(process.default_grid(max(int(n), 2)))
    return full[[0, -1]]

  def nfe(self, num_steps):
    return (int(num_steps) - 1) * (int(self.max_steps) * int(self.order) + 1) + 1

  def _solve(self, ctx, x, lam, lam_next, x0):
    """(x_low, x_high) from -log s = lam to lam_next: DPM-Solver-1 and -2, or -2 (r1 = 1/3) and -3."""
    sig = lambda v: jnp.exp(-v)  # noqa: E731
    h = lam_next - lam
    eps, _ = _eps_at(ctx, x, sig(lam), x0)
    if self.order == 2:
      x1 = x - sig(lam_next) * jnp.expm1(h) * eps
      s1 = lam + 0.5 * h
      e1, _ = _eps_at(ctx, x - sig(s1) * jnp.expm1(0.5 * h) * eps, sig(s1), x0)
      return x1, x1 - sig(lam_next) * jnp.expm1(h) * (e1 - eps)
    s1, s2 = lam + h / 3.0, lam + 2.0 * h / 3.0
    u1 = x - sig(s1) * jnp.expm1(h / 3.0) * eps
    e1, _ = _eps_at(ctx, u1, sig(s1), x0)
    base = x - sig(lam_next) * jnp.expm1(h) * eps
    x_low = base - sig(lam_next) * 1.5 * jnp.expm1(h) * (e1 - eps)
    u2 = x - sig(s2) * jnp.expm1(2.0 * h / 3.0) * eps
    u2 = u2 - sig(s2) * 2.0 * (jnp.expm1(2.0 * h / 3.0) / (2.0 * h / 3.0) - 1.0) * (e1 - eps)
    e2, _ = _eps_at(ctx, u2, sig(s2), x0)
    x_high = base - sig(lam_next) / (2.0 / 3.0) * (jnp.expm1(h) / h - 1.0) * (e2 - eps)
    return x_low, x_high

  def _iterate(self, ctx, c: _Adaptive, lam_end) -> _Adaptive:
    k = 1.0 * int(self.order)
    p, i, d = self.pcoeff, self.icoeff, self.dcoeff
    b1, b2, b3 = (p + i + d) / k, -(p + 2 * d) / k, d / k
    lam_to = jnp.minimum(lam_end, c.lam + c.h)
    x_low, x_high = self._solve(ctx, c.x, c.lam, lam_to, c.x0)
    delta = jnp.maximum(self.atol, self.rtol * jnp.maximum(jnp.abs(x_low), jnp.abs(c.x_prev)))
    error = jnp.sqrt(jnp.sum(jnp.square((x_low - x_high) / delta))) / math.sqrt(c.x.size)
    inv = 1.0 / (error + 1e-8)
    errs = jnp.where(c.first, jnp.stack([inv, inv, inv]), c.errs.at[0].set(inv))
    factor = 1.0 + jnp.arctan(errs[0] ** b1 * errs[1] ** b2 * errs[2] ** b3 - 1.0)
    accept = factor >= self.accept_safety
    errs = jnp.where(accept, jnp.stack([errs[0], errs[0], errs[1]]), errs)
    pick = lambda a, b: jnp.where(accept, a, b)  # noqa: E731
    return _Adaptive(pick(x_high, c.x), pick(x_low, c.x_prev), pick(lam_to, c.lam), c.h * factor, errs,
                     jnp.zeros((), bool), c.steps + 1, c.x0)  # fmt: skip

  def step(self, ctx, state, inp, final):
    d = ctx.denoise(state.x, inp.t, inp.alpha, inp.sigma, state.x0)
    if final:
      return State(ddim_update(inp.alpha_next, inp.sigma_next, d.x0, d.eps), d.x0, state.aux), d.x0
    x_t = state.x / inp.alpha
    lam, lam_end = -jnp.log(inp.sigma / inp.alpha), -jnp.log(inp.sigma_next / inp.alpha_next)
    dt = x_t.dtype
    start = _Adaptive(x_t, x_t, lam, jnp.asarray(abs(self.h_init), dt), jnp.ones(3, dt),
                      jnp.ones((), bool), jnp.zeros((), jnp.int32), d.x0)  # fmt: skip
    run = jax.lax.while_loop(
      lambda c: (c.lam < lam_end - 1e-5) & (c.steps < self.max_steps),
      lambda c: self._iterate(ctx, c, lam_end),
      start,
    )
    return State(inp.alpha_next * run.x, d.x0, state.aux), d.x0
