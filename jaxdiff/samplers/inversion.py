"""`jaxdiff.invert`: a deterministic sampler run backwards, from data to the first grid time, one scan.

Sampling maps the state at the first grid time to data through the steps t_0 -> t_1 -> ... -> clean;
inversion runs the same steps in the opposite order, each from the lower noise level to the higher
one, with the sampler's own update (`Sampler.step` on the step's levels swapped): DDIM inversion for
ddim and euler, Heun's method on the reversed probability-flow ODE for heun, DPM-Solver++ with
h < 0 for dpmpp_2m / dpmpp_3m. Each reversed step evaluates the model at its start, the lower
noise level (the forward step evaluates at the higher one), so `sample(..., x_init=invert(...))`
with the same sampler and grid gives x0 back up to the solvers' discretisation error, which
shrinks as the steps do.

The step that lands on clean data cannot be reversed by evaluating the model at sigma = 0; it is
x_{t_last} = alpha x0 + sigma eps_hat with eps_hat the model's noise prediction at
(alpha x0, t_last), the first fixed-point iterate of the exact inverse of that step (an error of
order sigma_last^2 relative to it). Stochastic samplers (ddpm, euler_ancestral, dpmpp_2m_sde,
ddim with eta > 0, churn) and unipc (whose corrector has no explicit reverse) are refused.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp

from jaxdiff import perf
from jaxdiff.processes import as_process
from jaxdiff.samplers.base import Sampler, State, StepInput
from jaxdiff.samplers.scan import (
  _as_pytree_fn,
  _check_cond,
  _check_shape,
  _context,
  _grid_arrays,
  _Static,
  _static,
  _step_inputs,
  _take,
  make_sampler,
  plan_grid,
)

__all__ = ["invert", "reversed_inputs"]


def reversed_inputs(inputs: StepInput, order) -> StepInput:
  """The steps 0 .. n-2 with each step's two levels swapped: from the lower noise level to the higher.

  The first reversed step (the last of these) restarts multistep histories; multistep orders are
  capped at `order` only (the forward run's lower-order final steps are a sampling choice).
  """
  body = _take(inputs, slice(0, inputs.t.shape[0] - 1))
  m = body.t.shape[0]
  return body._replace(
    t=body.t_next,
    t_next=body.t,
    alpha=body.alpha_next,
    sigma=body.sigma_next,
    alpha_next=body.alpha,
    sigma_next=body.sigma,
    max_order=jnp.full((m,), order, jnp.int32),
    restart=jnp.arange(m) == m - 1,
    clean=jnp.zeros((m,), bool),
  )


def _invert_body(st: _Static, smp: Sampler, model_fn, process, ts, prev, clean, max_orders, x0, cond, uncond,
                 guide):  # fmt: skip
  proc = as_process(process)
  ctx = _context(model_fn, st, proc, jax.random.key(0), cond, uncond, guide)  # no noise is drawn
  inputs = _step_inputs(st, smp, proc, ts, prev, clean, max_orders, guide.schedule)
  n = ts.shape[0]
  x0 = jnp.asarray(x0, jnp.float32)
  # the step onto clean data, backwards: x = alpha x0 + sigma eps_hat(alpha x0, t_last)
  last = _take(inputs, n - 1)
  d = ctx.for_step(last).denoise(last.alpha * x0, last.t, last.alpha, last.sigma, x0)
  x = last.alpha * x0 + last.sigma * d.eps
  if n == 1:
    return x
  state = State(x, d.x0, smp.init(x))

  def body(carry, inp):
    carry, _ = smp.step(ctx.for_step(inp), carry, inp, False)
    return carry, None

  state, _ = jax.lax.scan(body, state, reversed_inputs(inputs, jnp.max(max_orders)), reverse=True)
  return state.x


_INVERT = perf.jit(_invert_body, static_argnums=(0,))


def invert(
  model_fn: Callable[..., jnp.ndarray],
  process,
  x0: jnp.ndarray,
  *,
  sampler: str | Sampler = "ddim",
  num_steps: int | None,
  ts=None,
  prediction: str,
  cond: Mapping[str, Any] | None = None,
  guidance_scale: float | None = None,
  uncond: Mapping[str, Any] | None = None,
  spacing: str | None = None,
  sigma_data: float | None = None,
  **options: Any,
) -> jnp.ndarray:
  """x at the first grid time whose sampling run (same sampler, grid and conditioning) gives `x0`.

  Args:
    model_fn, process, prediction, cond, uncond, guidance_scale, sigma_data: as for
      `jaxdiff.sample` (guidance inverts the guided ODE: sample back with the same guidance).
    x0: the data, batch first ([batch, ...], the shape of the samples).
    sampler: ddim (eta=0), euler or heun (no churn; heun's `frame`), dpmpp_2m or dpmpp_3m.
    num_steps / ts / spacing: the grid, as `jaxdiff.sample` plans it (None steps with `ts`).

  Returns:
    x_T (float32, x0's shape): `jaxdiff.sample(..., x_init=x_T)` reproduces x0. One `lax.scan`
    inside one jit; the model is evaluated as often as in sampling (`jaxdiff.nfe`).
  """
  smp = make_sampler(sampler, **options)
  smp.check_invertible()
  proc = as_process(process)
  x0 = jnp.asarray(x0)
  shape = _check_shape(x0.shape)
  grid = plan_grid(proc, smp, num_steps, ts, spacing)
  guided, cond, uncond, guide = _check_cond(guidance_scale, cond, uncond, shape, num_steps=len(grid.ts))
  st = _static(smp, proc, shape, prediction, sigma_data, None, guided, False, False, grid)
  t_arr, prev, clean, orders = _grid_arrays(grid)
  return _INVERT(st, smp, _as_pytree_fn(model_fn), proc, t_arr, prev, clean, orders, x0, cond, uncond, guide)
