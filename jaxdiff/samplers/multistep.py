"""Multistep solvers in log-SNR time: DPM-Solver++(2M), (3M), (2M) SDE and UniPC (bh2, UniC).

With lambda = log(alpha / sigma) and h = lambda' - lambda, each step is exact integration of the
data-prediction ODE with x0 extrapolated from the previous steps' predictions (Lu et al. 2022;
Zhao et al. 2023). The history lives in the scan carry; a step's order is the lower of its static
cap (first order on the last step, as diffusers' lower_order_final) and one more than the number
of valid past predictions, so the first step and a step after a RePaint jump are first order.
e^{-h} is formed as the ratio (sigma' alpha) / (alpha' sigma), so the last step to sigma' = 0 needs
no infinity.
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp
import numpy as np

from jaxdiff.errors import SamplingError
from jaxdiff.samplers.base import Sampler, State, lam, register, static

__all__ = ["DPMSolverPP2M", "DPMSolverPP3M", "DPMSolverPP2MSDE", "UniPC"]


class _History(NamedTuple):
  m: tuple  # the previous x0 predictions, newest first
  lam: tuple  # their lambda
  count: jnp.ndarray  # how many are valid


def _empty_history(x, size: int) -> _History:
  return _History(
    tuple(jnp.zeros_like(x) for _ in range(size)),
    tuple(jnp.zeros((), x.dtype) for _ in range(size)),
    jnp.zeros((), jnp.int32),
  )


def _push(h: _History, m0, lam0, count) -> _History:
  size = len(h.m)
  return _History((m0,) + h.m[:-1], (lam0.astype(h.lam[0].dtype),) + h.lam[:-1], jnp.minimum(count + 1, size))


def _past_gaps(h: _History, lam_now) -> tuple:
  """The log-SNR gaps of the steps before this one, newest first (garbage where not valid: the
  order is capped by the history's count anyway)."""
  lams = (lam_now,) + h.lam
  return tuple(lams[j] - lams[j + 1] for j in range(len(h.lam)))


def _select(order, candidates):
  """candidates[k - 1] where order == k (every candidate is computed; NaNs of unused ones stay out)."""
  out = candidates[0]
  for k, c in enumerate(candidates[1:], start=2):
    out = jnp.where(order >= k, c, out)
  return out


# A multistep step extrapolates the x0 predictions of earlier levels over its own log-SNR gap h; it
# keeps order k >= 2 only while h is at most `gap_ratio` times each of the k - 1 gaps before it. The
# classic grids (Karras, trailing spacing) grow their gaps by under 1.7x per step and 2.2x over two
# steps; the default grids of the flow, VP-SDE and leading-spaced chains end with one gap 3.5-8 times
# the one before it.
GAP_RATIO = 2.5


def _gap_order(order, h, gaps, ratio=GAP_RATIO):
  """`order` lowered where this step's log-SNR gap h is over `ratio` times an earlier gap (gaps[j]
  is the gap j + 1 steps back); the loss of order is decided from the grid's log-SNR, not a step count."""
  ok = jnp.ones_like(order, dtype=bool)
  for k, g in enumerate(gaps, start=2):
    ok = ok & (jnp.abs(h) <= ratio * jnp.abs(g))
    order = jnp.where(ok, order, jnp.minimum(order, k - 1))
  return order


def _check_gap_ratio(sampler) -> None:
  ratio = sampler.number("gap_ratio")
  if ratio is not None and not ratio >= 1.0:  # inf: never lower the order (diffusers' rule)
    raise SamplingError(
      f"gap_ratio must be a number >= 1 (inf to keep every order), got {sampler.gap_ratio!r}."
    )


def _lower_order_final(num_steps: int, order: int, below: int | None) -> np.ndarray:
  """Static order caps: `order`, first order on the last step, and (when num_steps < below)
  at most second order on the step before it (diffusers' lower_order_final)."""
  caps = np.full(num_steps, order, np.int32)
  if below is not None and num_steps < below and num_steps >= 2:
    caps[-2] = min(order, 2)
  caps[-1] = 1
  return caps


class _DPMSolverPP(Sampler):
  order = 2
  finite_top = True
  invertible = True  # the same update with h < 0 integrates the ODE from data towards noise

  gap_ratio: float = GAP_RATIO

  def check_options(self):
    _check_gap_ratio(self)

  def max_orders(self, num_steps):
    return _lower_order_final(num_steps, self.order, below=15)

  def init(self, x):
    return _empty_history(x, self.order - 1)

  def step(self, ctx, state, inp, final):
    d = ctx.denoise(state.x, inp.t, inp.alpha, inp.sigma, state.x0)
    hist = state.aux
    count = jnp.where(inp.restart, 0, hist.count)
    a, s, a_n, s_n = inp.alpha, inp.sigma, inp.alpha_next, inp.sigma_next
    lam_s, lam_t = lam(a, s), lam(a_n, s_n)
    h = lam_t - lam_s
    order = _gap_order(jnp.minimum(inp.max_order, count + 1), h, _past_gaps(hist, lam_s), self.gap_ratio)
    emh = (s_n * a) / (a_n * s)  # e^{-h}
    m0 = d.x0
    x_new = self.update(ctx, inp, state.x, m0, hist, order, a_n, s_n, s, lam_s, h, emh)
    aux = _push(hist, m0, lam_s, count) if self.order > 1 else hist
    return State(x_new, m0, aux), m0

  def update(self, ctx, inp, x, m0, hist, order, a_n, s_n, s, lam_s, h, emh):
    first = (s_n / s) * x - a_n * (emh - 1.0) * m0
    if self.order == 1:
      return first
    m1, lam1 = hist.m[0], hist.lam[0]
    r0 = (lam_s - lam1) / h
    d1_0 = (m0 - m1) / r0
    second = first - 0.5 * a_n * (emh - 1.0) * d1_0
    if self.order == 2:
      return _select(order, [first, second])
    m2, lam2 = hist.m[1], hist.lam[1]
    r1 = (lam1 - lam2) / h
    d1_1 = (m1 - m2) / r1
    d1 = d1_0 + (r0 / (r0 + r1)) * (d1_0 - d1_1)
    d2 = (d1_0 - d1_1) / (r0 + r1)
    em1 = jnp.expm1(-h)
    third = first + a_n * (em1 / h + 1.0) * d1 - a_n * ((em1 + h) / (h * h) - 0.5) * d2
    return _select(order, [first, second, third])


@register
class DPMSolverPP2M(_DPMSolverPP):
  """DPM-Solver++(2M), data prediction, midpoint: diffusers' DPMSolverMultistepScheduler(solver_order=2)."""

  name = "dpmpp_2m"
  order = 2


@register
class DPMSolverPP3M(_DPMSolverPP):
  """DPM-Solver++(3M): diffusers' DPMSolverMultistepScheduler(solver_order=3, lower_order_final=True)."""

  name = "dpmpp_3m"
  order = 3


@register
class DPMSolverPP2MSDE(_DPMSolverPP):
  """DPM-Solver++(2M) SDE (midpoint), diffusers' algorithm_type="sde-dpmsolver++" with solver_order=2:
  x' = (sigma'/sigma) e^{-h} x + alpha' (1 - e^{-2h}) (D0 + D1 / 2) + sigma' sqrt(1 - e^{-2h}) z."""

  name = "dpmpp_2m_sde"
  order = 2
  invertible = False

  def update(self, ctx, inp, x, m0, hist, order, a_n, s_n, s, lam_s, h, emh):
    one_m = 1.0 - jnp.square(emh)
    noise = s_n * jnp.sqrt(jnp.maximum(one_m, 0.0)) * ctx.noise(inp.index, x.shape)
    first = (s_n / s) * emh * x + a_n * one_m * m0
    m1, lam1 = hist.m[0], hist.lam[0]
    r0 = (lam_s - lam1) / h
    second = first + 0.5 * a_n * one_m * (m0 - m1) / r0
    return _select(order, [first, second]) + noise


def _unipc_b(hh, k: int):
  """(h phi_1, B(h), [b_1..b_k]) of UniPC with B(h) = e^{hh} - 1 (bh2), hh = -h (data prediction)."""
  h_phi_1 = jnp.expm1(hh)
  b_h = jnp.expm1(hh)
  h_phi_k = h_phi_1 / hh - 1.0
  factorial = 1.0
  bs = []
  for i in range(1, k + 1):
    bs.append(h_phi_k * factorial / b_h)
    factorial *= i + 1
    h_phi_k = h_phi_k / hh - 1.0 / factorial
  return h_phi_1, b_h, bs


class _UniPCCarry(NamedTuple):
  hist: _History  # the last three x0 predictions and their lambda
  x_last: jnp.ndarray  # the (corrected) state the last predictor started from
  sigma_last: jnp.ndarray
  last_order: jnp.ndarray  # the order the last predictor used (the corrector's order)


@register
class UniPC(Sampler):
  """UniPC (Zhao et al. 2023): the UniP predictor and the UniC corrector, B(h) = bh2, data prediction.

  Matches diffusers' UniPCMultistepScheduler(solver_order=order, predict_x0=True,
  solver_type="bh2", lower_order_final=True). The corrector refines each state with the model
  output already computed at it, so it costs no extra evaluation; corrector=False gives UniP alone.
  """

  name = "unipc"

  order: int = static(2)
  corrector: bool = static(True)
  gap_ratio: float = GAP_RATIO

  def check_options(self):
    if self.order not in (1, 2, 3):
      raise SamplingError(f"unipc order must be 1, 2 or 3, got {self.order!r}.")
    _check_gap_ratio(self)

  def max_orders(self, num_steps):
    k = int(self.order)
    return np.minimum(k, num_steps - np.arange(num_steps)).astype(np.int32)

  def init(self, x):
    return _UniPCCarry(
      _empty_history(x, 3), jnp.zeros_like(x), jnp.ones((), x.dtype), jnp.ones((), jnp.int32)
    )

  def _correct(self, x_last, sigma_last, hist, m0, a, s, lam_s, order):
    """UniC: x at this level refined with this level's prediction m0 (order = the last predictor's)."""
    (m1, m2, m3), (lam1, lam2, lam3) = hist.m, hist.lam
    h = lam_s - lam1
    h_phi_1, b_h, (b1, b2, b3) = _unipc_b(-h, 3)
    base = (s / sigma_last) * x_last - a * h_phi_1 * m1
    d1_t = m0 - m1
    c1 = base - a * b_h * 0.5 * d1_t
    r1, r2 = (lam2 - lam1) / h, (lam3 - lam1) / h
    d1_1, d1_2 = (m2 - m1) / r1, (m3 - m1) / r2
    rho1 = (b1 - b2) / (1.0 - r1)
    c2 = base - a * b_h * (rho1 * d1_1 + (b1 - rho1) * d1_t)
    mat = jnp.stack([jnp.ones(3), jnp.stack([r1, r2, 1.0]), jnp.stack([r1 * r1, r2 * r2, 1.0])])
    rho = jnp.linalg.solve(mat, jnp.stack([b1, b2, b3]))
    c3 = base - a * b_h * (rho[0] * d1_1 + rho[1] * d1_2 + rho[2] * d1_t)
    return _select(order, [c1, c2, c3])

  def _predict(self, x, hist, m0, a_n, s_n, s, lam_s, h, order):
    """UniP from this level to the next with this prediction and the history."""
    (m1, m2, _), (lam1, lam2, _) = hist.m, hist.lam
    h_phi_1, b_h, (b1, b2) = _unipc_b(-h, 2)
    first = (s_n / s) * x - a_n * h_phi_1 * m0
    r1, r2 = (lam1 - lam_s) / h, (lam2 - lam_s) / h
    d1_1, d1_2 = (m1 - m0) / r1, (m2 - m0) / r2
    second = first - a_n * b_h * 0.5 * d1_1
    det = r2 - r1
    third = first - a_n * b_h * (((b1 * r2 - b2) / det) * d1_1 + ((b2 - b1 * r1) / det) * d1_2)
    return _select(order, [first, second, third])

  def step(self, ctx, state, inp, final):
    c: _UniPCCarry = state.aux
    d = ctx.denoise(state.x, inp.t, inp.alpha, inp.sigma, state.x0)
    m0 = d.x0
    count = jnp.where(inp.restart, 0, c.hist.count)
    a, s, a_n, s_n = inp.alpha, inp.sigma, inp.alpha_next, inp.sigma_next
    lam_s = lam(a, s)
    x = state.x
    if self.corrector:
      corrected = self._correct(c.x_last, c.sigma_last, c.hist, m0, a, s, lam_s, c.last_order)
      x = jnp.where(count > 0, corrected, x)
    h = lam(a_n, s_n) - lam_s
    order = _gap_order(
      jnp.minimum(inp.max_order, count + 1), h, _past_gaps(c.hist, lam_s)[:2], self.gap_ratio
    )
    x_new = self._predict(x, c.hist, m0, a_n, s_n, s, lam_s, h, order)
    aux = _UniPCCarry(_push(c.hist, m0, lam_s, count), x, s.astype(x.dtype), order.astype(jnp.int32))
    return State(x_new, m0, aux), m0
