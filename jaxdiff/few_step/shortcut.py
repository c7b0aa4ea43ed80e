"""Shortcut models (Frans et al. 2024): a flow conditioned on its step size d = t - r.

At d = 0 the network is a plain flow-matching velocity; for d > 0 it learns, by self-consistency,
the step that two steps of d/2 take: u(x_t, t, t - 2d) = (u(x_t, t, t - d) + u(x', t - d, t - 2d)) / 2
with x' = x_t - d u(x_t, t, t - d), the targets stop-gradient. The smallest d bootstraps from d = 0.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp

from jaxdiff.errors import ConfigError
from jaxdiff.few_step.common import expand, flow_process, per_example
from jaxdiff.few_step.times import shortcut_times

__all__ = ["shortcut_target", "shortcut_loss"]


def shortcut_target(u_fn: Callable, x_t, t, d, *, instantaneous=None) -> jnp.ndarray:
  """(u(x_t, t, t - d) + u(x', t - d, t - 2d)) / 2, x' = x_t - d u(x_t, t, t - d): the average
  velocity over [t - 2d, t] from two steps of d (u_fn(x, t, r)). Where `instantaneous` (bool [B])
  is set, the two steps query the velocity at d = 0 (r = t) and still move by d."""
  q = d if instantaneous is None else jnp.where(instantaneous, 0.0, d)
  s1 = u_fn(x_t, t, t - q)
  x_mid = x_t - expand(d, x_t.ndim) * s1
  s2 = u_fn(x_mid, t - d, t - d - q)
  return 0.5 * (s1 + s2)


def shortcut_loss(
  model_fn: Callable[..., jnp.ndarray],
  process: Any,
  x0: jnp.ndarray,
  key: jax.Array,
  *,
  cond: Mapping[str, Any] | None = None,
  fraction: float = 0.25,
  max_log2: int = 7,
  logit_mean: float = 0.0,
  logit_std: float = 1.0,
  velocity_fn: Callable | None = None,
  noise: jnp.ndarray | None = None,
) -> tuple[jnp.ndarray, dict[str, jnp.ndarray]]:
  """The shortcut loss of model_fn(x_t, t, r=r, **cond) -> u on rectified flow: flow matching at
  d = 0 on a fraction 1 - `fraction` of the batch (t logit-normal), self-consistency targets for
  2d from two steps of d (`times.shortcut_times`, d down to 2^-max_log2) on the rest; both in one
  forward pass. `velocity_fn(x_t, t)` replaces eps - x0 as the d = 0 target (e.g. the exact one)."""
  flow_process(process, "the shortcut loss")
  if not 0.0 <= fraction <= 1.0:
    raise ConfigError(f"fraction must be in [0, 1], got {fraction!r}.")
  cond = dict(cond or {})
  batch = x0.shape[0]
  n_sc = int(round(batch * fraction))
  k_fm, k_sc, k_noise = jax.random.split(key, 3)
  if noise is None:
    noise = jax.random.normal(k_noise, x0.shape, x0.dtype)
  x0 = x0.astype(jnp.float32)
  t_fm = jax.nn.sigmoid(logit_mean + logit_std * jax.random.normal(k_fm, (batch,), jnp.float32))
  t_sc, d = shortcut_times(k_sc, batch, max_log2=max_log2)
  is_sc = jnp.arange(batch) < n_sc
  t = jnp.where(is_sc, t_sc, t_fm)
  x_t = expand(1.0 - t, x0.ndim) * x0 + expand(t, x0.ndim) * noise
  r = jnp.where(is_sc, t - 2.0 * d, t)

  if velocity_fn is not None:
    v = velocity_fn(x_t, t).astype(jnp.float32)
  else:
    v = noise - x0
  target = v
  if n_sc:

    def u_fn(x, tt, rr):
      sub = {k: jnp.asarray(c)[:n_sc] if jnp.ndim(c) else c for k, c in cond.items()}
      return model_fn(x, tt, r=rr, **sub).astype(jnp.float32)

    smallest = jnp.isclose(d[:n_sc], 2.0**-max_log2)
    sc = shortcut_target(u_fn, x_t[:n_sc], t[:n_sc], d[:n_sc], instantaneous=smallest)
    target = jnp.concatenate([sc, v[n_sc:]], axis=0)
  target = jax.lax.stop_gradient(target)
  u = model_fn(x_t, t, r=r, **cond).astype(jnp.float32)
  sq = per_example(jnp.square(u - target))
  sc_mask = is_sc.astype(jnp.float32)
  metrics = {
    "loss": jnp.mean(sq),
    "loss_unweighted": jnp.mean(sq),
    "loss_flow": jnp.sum((1.0 - sc_mask) * sq) / jnp.maximum(jnp.sum(1.0 - sc_mask), 1.0),
    "loss_self_consistency": jnp.sum(sc_mask * sq) / jnp.maximum(jnp.sum(sc_mask), 1.0),
  }
  return jnp.mean(sq), metrics
