"""Consistency models by easy consistency training (ECT, Geng et al. 2024) or distillation.

The consistency function f(x_t, t) maps every point of a probability-flow trajectory to its clean
end; a network parameterised as x0 (on rectified flow with prediction "flow": f = x_t - t F, so
f(x, 0) = x exactly) is trained so that f(x_t, t) = sg f(x_r, r) for a nearby earlier time r.
ECT on any jaxdiff process: r is t with its noise level sigma/alpha shrunk by a factor (1 - delta),
delta annealed from `delta_start` to `delta_end` over training (ECT's shrinking Delta t, starting
from a diffusion-like objective); x_r shares x_t's noise (consistency training) or is one ODE step
of a frozen teacher (distillation). Loss: pseudo-Huber with ECT's 1 / (ratio_t - ratio_r) weight.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp

from jaxdiff.few_step.common import expand, per_example
from jaxdiff.processes import as_process

__all__ = ["consistency_delta", "consistency_pair", "consistency_loss", "pseudo_huber"]


def consistency_delta(step, num_steps: int, start: float = 0.5, end: float = 0.02) -> jnp.ndarray:
  """ECT's shrinking step: the relative noise-level gap at training `step` of `num_steps`,
  geometric from `start` to `end`."""
  frac = jnp.clip(jnp.asarray(step, jnp.float32) / max(int(num_steps), 1), 0.0, 1.0)
  return jnp.exp(math.log(start) + frac * (math.log(end) - math.log(start)))


def consistency_pair(process: Any, t: jnp.ndarray, delta) -> jnp.ndarray:
  """The earlier time r of each t: noise level sigma/alpha multiplied by (1 - delta)."""
  proc = as_process(process)
  a, s = proc.alpha_sigma(t)
  return proc.time_at((s / a) * (1.0 - delta)).astype(jnp.float32)


def pseudo_huber(diff: jnp.ndarray, c: float) -> jnp.ndarray:
  """sqrt(||diff||^2 + c^2) - c per example, ||.|| the RMS over the data axes (iCT's loss)."""
  return jnp.sqrt(per_example(jnp.square(diff)) + c * c) - c


def consistency_loss(
  model_fn: Callable[..., jnp.ndarray],
  process: Any,
  x0: jnp.ndarray,
  key: jax.Array,
  *,
  to_x0: Callable,
  delta=0.1,
  cond: Mapping[str, Any] | None = None,
  time_sampling: str | None = None,
  huber_c: float = 0.03,
  teacher_step: Callable | None = None,
  t: jnp.ndarray | None = None,
  noise: jnp.ndarray | None = None,
) -> tuple[jnp.ndarray, dict[str, jnp.ndarray]]:
  """The consistency loss of model_fn(x_t, t, **cond); `to_x0(x_t, t, output)` turns an output into
  f's value (the x0 its prediction implies). Returns (loss, metrics).

  `teacher_step(x_t, t, r)`: distillation (x_r = one ODE step of a frozen teacher); None:
  consistency training (x_r = alpha_r x0 + sigma_r eps with x_t's eps)."""
  proc = as_process(process)
  cond = dict(cond or {})
  batch = x0.shape[0]
  k_t, k_noise = jax.random.split(key)
  x0 = x0.astype(jnp.float32)
  t = proc.sample_time(k_t, batch, time_sampling) if t is None else jnp.broadcast_to(t, (batch,))
  t = jnp.asarray(t, jnp.float32)
  r = consistency_pair(proc, t, delta)
  if noise is None:
    noise = jax.random.normal(k_noise, x0.shape, jnp.float32)
  a_t, s_t = proc.alpha_sigma(t)
  a_r, s_r = proc.alpha_sigma(r)
  x_t = expand(a_t, x0.ndim) * x0 + expand(s_t, x0.ndim) * noise
  if teacher_step is None:
    x_r = expand(a_r, x0.ndim) * x0 + expand(s_r, x0.ndim) * noise
  else:
    x_r = teacher_step(x_t, t, r)
  f_r = jax.lax.stop_gradient(to_x0(x_r, r, model_fn(x_r, r, **cond).astype(jnp.float32)))
  f_t = to_x0(x_t, t, model_fn(x_t, t, **cond).astype(jnp.float32))
  gap = s_t / a_t - s_r / a_r
  w = 1.0 / jnp.maximum(gap, 1e-6)
  w = w / jax.lax.stop_gradient(jnp.mean(w))  # the weights' shape over t, not their scale
  per = pseudo_huber(f_t - f_r, huber_c)
  total = jnp.mean(w * per)
  metrics = {
    "loss": total,
    "loss_unweighted": jnp.mean(per),
    "consistency_delta": jnp.asarray(delta, jnp.float32),
  }
  return total, metrics
