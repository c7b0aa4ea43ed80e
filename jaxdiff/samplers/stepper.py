"""`Stepper`: the steps `jaxdiff.sample` scans over, one call each, for loops of your own."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxdiff.processes import as_process
from jaxdiff.samplers.base import Sampler, State
from jaxdiff.samplers.scan import (
  _as_pytree_fn,
  _check_cond,
  _check_shape,
  _context,
  _grid_arrays,
  _static,
  _step_inputs,
  _take,
  make_sampler,
  plan_grid,
)

__all__ = ["Stepper", "LoopState"]


class LoopState(NamedTuple):
  """A Stepper's state: x at the current level, the last x0 prediction, the sampler's carry, the key."""

  x: jnp.ndarray
  x0: jnp.ndarray
  aux: Any
  key: jax.Array


class Stepper:
  """The step-level API: the same steps `sample` scans over, one call each, for loops of your own.

      stepper = jaxdiff.samplers.Stepper(model_fn, process, shape, sampler="dpmpp_2m", num_steps=20)
      state = stepper.init(key)
      for i in range(stepper.num_steps):
        state = stepper.step(state, i)   # edit state.x, log state.x0, ... between steps
      x = state.x

  `init(key)` draws the starting noise exactly as `sample(..., key)` does, so the loop gives the
  same samples. `times` holds the model times of the steps.
  """

  def __init__(
    self,
    model_fn: Callable[..., jnp.ndarray],
    process,
    shape: tuple[int, ...],
    *,
    sampler: str | Sampler = "ddim",
    num_steps: int | None = None,
    ts=None,
    prediction: str = "eps",
    spacing: str | None = None,
    clip_x0: float | None = None,
    guidance_scale: float | None = None,
    cond: Mapping[str, Any] | None = None,
    uncond: Mapping[str, Any] | None = None,
    guidance_rescale: float | None = None,
    guidance_interval: tuple[float, float] | None = None,
    guidance_schedule: Any = None,
    self_condition: bool = False,
    sigma_data: float | None = None,
    **options: Any,
  ):
    self.sampler = make_sampler(sampler, **options)
    self.process = as_process(process)
    self.shape = _check_shape(shape)
    self.grid = plan_grid(self.process, self.sampler, num_steps, ts, spacing)
    guided, cond, uncond, guide = _check_cond(
      guidance_scale, cond, uncond, self.shape, rescale=guidance_rescale, interval=guidance_interval,
      schedule=guidance_schedule, num_steps=len(self.grid.ts),
    )  # fmt: skip
    self._st = _static(
      self.sampler, self.process, self.shape, prediction, sigma_data, clip_x0, guided, self_condition, False,
      self.grid,
    )  # fmt: skip
    self._ctx = _context(_as_pytree_fn(model_fn), self._st, self.process, None, cond, uncond, guide)
    t_arr, prev, clean, orders = _grid_arrays(self.grid)
    self._inputs = _step_inputs(
      self._st, self.sampler, self.process, t_arr, prev, clean, orders, guide.schedule
    )

  @property
  def num_steps(self) -> int:
    return len(self.grid.ts)

  @property
  def times(self) -> np.ndarray:
    return self.grid.ts

  def init(self, key: jax.Array, x_init: jnp.ndarray | None = None) -> LoopState:
    k_init, k_steps = jax.random.split(key)
    if x_init is None:
      t0 = jnp.asarray(self.grid.ts[0], jnp.float32)
      x_init = self.process.prior_std(t0) * jax.random.normal(k_init, self.shape, jnp.float32)
    x = jnp.asarray(x_init, jnp.float32)
    return LoopState(x, jnp.zeros_like(x), self.sampler.init(x), k_steps)

  def step(self, state: LoopState, i: int | jax.Array) -> LoopState:
    """Step i (0-based) of the grid: from its level to the next (the last lands on clean data).

    `i` may be a traced integer: `jax.jit(stepper.step)` compiles once and serves every step (a
    sampler whose last step differs, e.g. heun's, then selects it with `lax.cond`).
    """
    traced = isinstance(i, jax.core.Tracer)
    if not traced:
      i = int(i)
      if not 0 <= i < self.num_steps:
        raise IndexError(f"step {i} is outside 0..{self.num_steps - 1}.")
    inp = _take(self._inputs, i)
    ctx = self._ctx._replace(key=state.key).for_step(inp)
    current = State(state.x, state.x0, state.aux)

    def run(final: bool) -> State:
      return self.sampler.step(ctx, current, inp, final)[0]

    if not self.sampler.split_final:
      new = run(False)
    elif traced:
      new = jax.lax.cond(i == self.num_steps - 1, lambda: run(True), lambda: run(False))
    else:
      new = run(i == self.num_steps - 1)
    return LoopState(new.x, new.x0, new.aux, state.key)
