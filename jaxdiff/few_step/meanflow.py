"""MeanFlow (Geng et al. 2025): a network of two times learns the average velocity over [r, t].

u(x_t, r, t) = 1/(t - r) * integral_r^t v(x_s, s) ds, so one step is x_r = x_t - (t - r) u. The
MeanFlow identity u = v - (t - r) du/dt, with du/dt = v . d_x u + d_t u, gives a regression
target from one Jacobian-vector product of the network itself (`jax.jvp`, tangent (v, 1, 0) in
(x, t, r)); the target is stop-gradient.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp

from jaxdiff.errors import ConfigError
from jaxdiff.few_step.common import expand, flow_process, guided_velocity, per_example
from jaxdiff.few_step.times import meanflow_times

__all__ = ["meanflow_target", "meanflow_loss", "adaptive_weight", "VELOCITIES"]

VELOCITIES = ("sample", "model")


def meanflow_target(u_fn: Callable, x_t, t, r, v, tangent=None) -> tuple[jnp.ndarray, jnp.ndarray]:
  """(u, u_tgt): the network's average velocity and MeanFlow's target v - (t - r) du/dt, from one
  `jax.jvp` of u_fn(x, t, r) along (tangent, 1, 0), the tangent v unless given (improved MeanFlow
  takes the network's own velocity there). The target is not stop-gradient here."""
  tangent = v if tangent is None else tangent
  u, dudt = jax.jvp(u_fn, (x_t, t, r), (tangent, jnp.ones_like(t), jnp.zeros_like(r)))
  return u, v - expand(t - r, x_t.ndim) * dudt


def adaptive_weight(sq_err: jnp.ndarray, p: float, c: float) -> jnp.ndarray:
  """MeanFlow's adaptive loss weight sg(1 / (err + c)^p) per example (p = 0: plain L2)."""
  return jax.lax.stop_gradient(1.0 / jnp.power(sq_err + c, p))


def meanflow_loss(
  model_fn: Callable[..., jnp.ndarray],
  process: Any,
  x0: jnp.ndarray,
  key: jax.Array,
  *,
  cond: Mapping[str, Any] | None = None,
  uncond: Mapping[str, Any] | None = None,
  ratio: float = 0.25,
  logit_mean: float = -0.4,
  logit_std: float = 1.0,
  adaptive_p: float = 1.0,
  adaptive_c: float = 1e-3,
  omega: float = 1.0,
  kappa: float = 0.0,
  velocity: str = "sample",
  velocity_fn: Callable | None = None,
  t: jnp.ndarray | None = None,
  r: jnp.ndarray | None = None,
  noise: jnp.ndarray | None = None,
) -> tuple[jnp.ndarray, dict[str, jnp.ndarray]]:
  """The MeanFlow loss of model_fn(x_t, t, r=r, **cond) -> u on rectified flow. Returns (loss, metrics).

  (t, r) are drawn as the paper does (`times.meanflow_times`: logit-normal, r = t on a fraction
  1 - `ratio`) unless given. The velocity field along which du/dt is taken: "sample" (eps - x0,
  MeanFlow), "model" (the network's own stop-gradient u(x_t, t, t), improved MeanFlow's choice,
  which takes the sampling noise out of the JVP; the regression velocity stays eps - x0, so the
  loss is improved MeanFlow's ||u + (t - r) sg(du/dt) - (eps - x0)||^2), or `velocity_fn(x_t, t)`
  (e.g. the exact or a teacher's velocity, both tangent and regression velocity). `omega`, `kappa` fold classifier-free guidance into training (needs
  `uncond`, the null-conditioning keywords), so a guided sample still costs one evaluation.
  """
  flow_process(process, "the MeanFlow loss")
  if velocity not in VELOCITIES:
    raise ConfigError(f"velocity must be one of {VELOCITIES}, got {velocity!r}.")
  cond = dict(cond or {})
  batch = x0.shape[0]
  k_t, k_noise = jax.random.split(key)
  if t is None or r is None:
    t_draw, r_draw = meanflow_times(k_t, batch, ratio=ratio, logit_mean=logit_mean, logit_std=logit_std)
    t = t_draw if t is None else t
    r = r_draw if r is None else r
  t = jnp.broadcast_to(jnp.asarray(t, jnp.float32), (batch,))
  r = jnp.broadcast_to(jnp.asarray(r, jnp.float32), (batch,))
  if noise is None:
    noise = jax.random.normal(k_noise, x0.shape, x0.dtype)
  x0 = x0.astype(jnp.float32)
  x_t = expand(1.0 - t, x0.ndim) * x0 + expand(t, x0.ndim) * noise

  def velocity_at(kw):
    return model_fn(x_t, t, r=t, **kw).astype(jnp.float32)

  if velocity_fn is not None:
    v = jax.lax.stop_gradient(velocity_fn(x_t, t).astype(jnp.float32))
  else:
    v = noise - x0
  v = guided_velocity(velocity_at, x_t, v, cond, uncond, batch, omega, kappa)
  # the field du/dt is taken along: the regression velocity itself, or (improved MeanFlow) the
  # network's own stop-gradient instantaneous velocity, while the target stays v - (t - r) du/dt
  tangent = jax.lax.stop_gradient(velocity_at(cond)) if velocity == "model" and velocity_fn is None else v

  def u_fn(x, tt, rr):
    return model_fn(x, tt, r=rr, **cond).astype(jnp.float32)

  u, u_tgt = meanflow_target(u_fn, x_t, t, r, v, tangent)
  sq = per_example(jnp.square(u - jax.lax.stop_gradient(u_tgt)))
  w = adaptive_weight(sq, adaptive_p, adaptive_c)
  total = jnp.mean(w * sq)
  two = (r < t).astype(jnp.float32)
  metrics = {
    "loss": total,
    "loss_unweighted": jnp.mean(sq),
    "loss_flow": jnp.sum((1.0 - two) * sq) / jnp.maximum(jnp.sum(1.0 - two), 1.0),
    "loss_mean_flow": jnp.sum(two * sq) / jnp.maximum(jnp.sum(two), 1.0),
  }
  return total, metrics
