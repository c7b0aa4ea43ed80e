"""One- and two-step samplers: `meanflow`, `shortcut` (two-time networks) and `consistency`.

`meanflow` and `shortcut` call a two-time network model_fn(x, t, r=r, **cond) (prediction
"mean_velocity") once per step and jump x_r = x_t - (t - r) u, exact for an exact average
velocity; `consistency` evaluates a consistency function (any x0-implying prediction) and
re-injects fresh noise at the next level (multistep consistency sampling). Their default grid is
uniform in the process's time (t = 1, 1/2 for two steps on rectified flow). `ode_step` is one
step of any registered deterministic sampler per example: consistency distillation's target.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxdiff import grids
from jaxdiff.diffusion import model_input, split_output
from jaxdiff.errors import SamplingError
from jaxdiff.processes import RectifiedFlow, as_process
from jaxdiff.samplers.base import Context, Denoised, Sampler, State, StepInput, ddim_update, get, register

__all__ = ["MeanFlowSampler", "ShortcutSampler", "ConsistencySampler", "ode_step"]


class _Uniform(Sampler):
  """A one-step sampler's shared parts: a uniform default grid, no inpainting, alpha = 0 exact."""

  inpaint = False
  finite_top = False

  def default_grid(self, process: Any, n: int) -> np.ndarray:
    """n times evenly spaced from the process's top down to (not including) the clean end."""
    return grids.uniform(process, n)


@register
class MeanFlowSampler(_Uniform):
  """MeanFlow's sampler: x_r = x_t - (t - r) u(x_t, r, t) from level to level, one evaluation each."""

  name = "meanflow"
  processes = (RectifiedFlow,)

  def step(self, ctx: Context, state: State, inp: StepInput, final: bool):
    d = ctx.denoise(state.x, inp.t, inp.alpha, inp.sigma, state.x0, r=inp.t_next)
    return State(ddim_update(inp.alpha_next, inp.sigma_next, d.x0, d.eps), d.x0, state.aux), d.x0


@register
class ShortcutSampler(MeanFlowSampler):
  """Shortcut models' sampler: the step size d = t - r conditions the network (the same jump as
  `meanflow`); trained step sizes are powers of two, so 1, 2, 4, ... uniform steps."""

  name = "shortcut"


@register
class ConsistencySampler(_Uniform):
  """Multistep consistency sampling: x0 = f(x_t, t), then x at the next level = alpha' x0 + sigma' z
  with fresh noise z (none on the step to clean data); one evaluation per step."""

  name = "consistency"

  def step(self, ctx: Context, state: State, inp: StepInput, final: bool):
    d = ctx.denoise(state.x, inp.t, inp.alpha, inp.sigma, state.x0)
    z = ctx.noise(inp.index, state.x.shape)
    x = inp.alpha_next * d.x0 + jnp.where(inp.clean, 0.0, inp.sigma_next) * z
    return State(x, d.x0, state.aux), d.x0


def ode_step(
  model_fn: Callable[..., jnp.ndarray],
  process: Any,
  x_t: jnp.ndarray,
  t: jnp.ndarray,
  r: jnp.ndarray,
  *,
  sampler: str = "euler",
  prediction: str = "flow",
  sigma_data: float | None = None,
  cond: Mapping[str, Any] | None = None,
) -> jnp.ndarray:
  """x at time r[i] from x_t[i] at t[i]: one step of the registered deterministic `sampler` (its
  first step: multistep methods are first order there) with model_fn(x, t, **cond), per example."""
  proc = as_process(process)
  smp = get(sampler)()
  if smp.split_final is False and type(smp).step is Sampler.step:
    raise SamplingError(f"sampler {sampler!r} has no step to take.")
  sd = float(getattr(proc, "sigma_data", 0.5) if sigma_data is None else sigma_data)
  cond = dict(cond or {})

  def one(x, ti, ri, kw):
    def denoise(xx, tt, alpha, sigma, x_sc=None, r=None):
      tb = jnp.full((1,), tt, jnp.float32)
      out = model_fn(model_input(proc, xx, tb, prediction, sd), tb, **kw).astype(jnp.float32)
      x0, eps = split_output(prediction, xx, alpha, sigma, out, sd)
      return Denoised(x0, eps, None)

    a, s = proc.alpha_sigma(ti[None])
    a_n, s_n = proc.alpha_sigma(ri[None])
    extra = jax.tree_util.tree_map(lambda e: e[0], smp.prepare(a, s, a_n, s_n))
    inp = StepInput(
      index=jnp.int32(0), t=ti, t_next=ri, alpha=a[0], sigma=s[0], alpha_next=a_n[0], sigma_next=s_n[0],
      max_order=jnp.int32(1), restart=jnp.bool_(True), clean=jnp.bool_(False), extra=extra,
    )  # fmt: skip
    ctx = Context(denoise, proc, jax.random.key(0), False)
    state = State(x, jnp.zeros_like(x), smp.init(x))
    return smp.step(ctx, state, inp, False)[0].x

  batch = x_t.shape[0]
  kw = {k: jnp.asarray(v)[:, None] for k, v in cond.items()}
  out = jax.vmap(one)(x_t[:, None], jnp.asarray(t, jnp.float32), jnp.asarray(r, jnp.float32), kw)
  return out.reshape((batch,) + x_t.shape[1:])
