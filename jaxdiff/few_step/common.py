"""What the one-step losses share: the rectified-flow check, per-example reductions, guidance masks."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp

from jaxdiff.errors import ArgumentError, ConfigError
from jaxdiff.processes import RectifiedFlow, as_process

__all__ = ["flow_process", "per_example", "expand", "conditional_mask", "guided_velocity"]


def flow_process(process: Any, method: str) -> RectifiedFlow:
  """The process as a RectifiedFlow, or a ValueError naming the method and the fix."""
  proc = as_process(process)
  if not isinstance(proc, RectifiedFlow):
    raise ConfigError(
      f"{method} is defined on the rectified-flow process (x_t = (1 - t) x0 + t eps), not "
      f"{type(proc).__name__}; use jaxdiff.RectifiedFlow() (config.diffusion.process = 'flow')."
    )
  return proc


def per_example(a: jnp.ndarray) -> jnp.ndarray:
  """Mean over every axis but the batch: [B, ...] -> [B]."""
  return jnp.mean(a.reshape(a.shape[0], -1), axis=1)


def expand(a: jnp.ndarray, ndim: int) -> jnp.ndarray:
  """[B] -> [B, 1, ..., 1] with `ndim` axes in all."""
  return a.reshape(a.shape + (1,) * (ndim - a.ndim))


def conditional_mask(cond: Mapping[str, Any], uncond: Mapping[str, Any], batch: int) -> jnp.ndarray:
  """Bool [B]: the examples whose conditioning differs from the unconditional branch's (those
  a training step left conditional; label dropout made the rest unconditional already)."""
  differs = jnp.zeros((batch,), bool)
  for name, u in uncond.items():
    c = jnp.asarray(cond[name])
    u = jnp.broadcast_to(jnp.asarray(u), c.shape)
    differs = differs | jnp.any((c != u).reshape(batch, -1), axis=1)
  return differs


def guided_velocity(velocity_at, x_t, v, cond, uncond, batch: int, omega: float, kappa: float) -> jnp.ndarray:
  """MeanFlow's guidance folded into training: on conditional examples the field becomes
  omega v + kappa u(x_t, t, t | c) + (1 - omega - kappa) u(x_t, t, t | null), both network terms
  stop-gradient (`velocity_at(cond)` gives the network's instantaneous velocity); v elsewhere."""
  if uncond is None or (omega == 1.0 and kappa == 0.0):
    return v
  missing = sorted(set(uncond) - set(cond))
  if missing:
    raise ArgumentError(
      f"uncond has entries {missing} that cond lacks; give both branches the same keywords."
    )
  u_null = jax.lax.stop_gradient(velocity_at({**cond, **uncond}))
  field = omega * v + (1.0 - omega - kappa) * u_null
  if kappa:
    field = field + kappa * jax.lax.stop_gradient(velocity_at(cond))
  mask = expand(conditional_mask(cond, uncond, batch), x_t.ndim)
  return jnp.where(mask, field, v)
