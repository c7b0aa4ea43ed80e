"""Exact log-likelihood through the probability-flow ODE (Song et al. 2021, score_sde's likelihood.py).

For every process x_t = alpha(t) x0 + sigma(t) eps, the ODE is integrated in the process-free
frame y = x_t / alpha against u = log r, r = sigma / alpha (the noise-to-signal ratio; EDM's
variable when alpha = 1):

    dy/du = r * eps_hat(alpha y, t(r)),   t(r) = process.time_at(r)

which is the probability-flow ODE of every process at once (dy/dr = E[eps | y] is the ODE of
y = x0 + r eps, and x_t = alpha y only rescales it). The model's output of any parameterisation
(eps, x0, v, flow, edm) is turned into eps_hat by `jaxdiff.diffusion.split_output`, with EDM's
input scaling c_in applied as the samplers apply it. Then, with the change of variables,

    log p(x0) = log p_prior(y(U)) + int_{u0}^{U} div_y(dy/du) du

Conventions (chosen so that every process gives the same quantity):
- The ODE starts at y = x0 at the ratio r0 = `ratio_min` (default: the process's least noisy
  level r(t_min), and at least 1e-3), so log p is the density at x0 of the data smoothed by
  N(0, r0^2 I) that the model learned (score_sde starts at t = 1e-5 for the same reason).
- It ends at r1 = `ratio_max` (default r(t_max), at most 1e3: flows have alpha = 0 at t = 1).
  The prior is the process's terminal distribution N(0, prior_std(t1)^2 I) for x_t, i.e.
  N(0, (prior_std / alpha)^2 I) for y; it leaves out alpha^2 Var(x0), a relative error below
  1e-4 at the default ends.
- The divergence is the exact Jacobian trace (`exact_trace=True`: D forward-mode JVPs, for small
  D) or the Hutchinson-Skilling estimate z^T J z (`num_probes` probes, Rademacher or Gaussian,
  drawn once per example from `key` and held fixed along the path, as score_sde does): unbiased,
  and exact for Rademacher probes when J is diagonal.

Integration happens inside one jitted program. Default: adaptive Dormand-Prince 5(4) (RK45, the
method score_sde calls through scipy) in a `lax.while_loop` with at most `max_steps` steps, the
error measured per example (RMS over the dimensions and the log-density) and controlled for the
worst example of the batch; a batch that does not reach the end gives NaN and a ValueError.
Adaptive because the dynamics are smooth in u but their speed varies by orders of magnitude
between processes and data; the tolerance (rtol = atol = 1e-5, score_sde's) then bounds the
error where a fixed grid would need tuning per model. `num_steps=n` instead takes n fixed
Dormand-Prince (5th-order) steps on a uniform grid in u: a fixed cost (6 n + 1 evaluations).

Bits per dimension for 8-bit images (`ode_bits_per_dim`): as score_sde, data on `num_bins`
levels are uniformly dequantised, y = (k + U[0, 1)) * 2 / num_bins - 1 for level k (x0 =
k / 127.5 - 1, so y lies in [-1, 1)), and

    bits/dim = -log p(y) / (D ln 2) + log2(num_bins / 2)

(the density of data of range 2 in bins of width 2 / num_bins: + 7 for 256 levels, score_sde's
"offset = 7 - inverse_scaler(-1)" for centred data). By Jensen's inequality its mean is an upper
bound on the discrete negative log-likelihood of the 8-bit data (Theis et al. 2016), comparable
with DDPM's variational bound (`jaxdiff.evaluation.bits_per_dim`).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxdiff.diffusion import check_prediction, edm_scalings, split_output
from jaxdiff.errors import ArgumentError
from jaxdiff.processes import as_process

__all__ = [
  "ODELikelihood",
  "PROBES",
  "ode_likelihood",
  "ode_log_likelihood",
  "ode_bits_per_dim",
  "ode_bits_per_dim_terms",
  "dequantize",
  "likelihood_range",
]

PROBES = ("rademacher", "gaussian")
RATIO_FLOOR = 1e-3  # the default start ratio sigma/alpha is at least this
RATIO_CEIL = 1e3  # and the default end ratio at most this

# Dormand-Prince 5(4): nodes, stages, 5th-order weights (also stage 7: first same as last), and
# the difference to the embedded 4th-order weights (the error estimate).
_C = (0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0)
_A = (
  (),
  (1 / 5,),
  (3 / 40, 9 / 40),
  (44 / 45, -56 / 15, 32 / 9),
  (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
  (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
  (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84),
)
_B5 = (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84, 0.0)
_B4 = (5179 / 57600, 0.0, 7571 / 16695, 393 / 640, -92097 / 339200, 187 / 2100, 1 / 40)
_E = tuple(b5 - b4 for b5, b4 in zip(_B5, _B4))


class ODELikelihood(NamedTuple):
  """Per-example results ([B] each, nats) and the solver's work."""

  log_p: jnp.ndarray  # log p(x0) = prior + delta
  prior: jnp.ndarray  # log density of the ODE's end point under the prior
  delta: jnp.ndarray  # int div dy/du du (the change-of-variables term)
  steps: jnp.ndarray  # accepted solver steps (the whole batch shares them)
  nfe: jnp.ndarray  # velocity evaluations (each: one model call per probe or per dimension)
  end: jnp.ndarray  # [B, ...] y = x_t / alpha at the end of the path (ratio_max), where the prior is read
  ratio_min: jnp.ndarray  # the noise-to-signal ratios sigma/alpha where the path starts and ends
  ratio_max: jnp.ndarray


class _Spec(NamedTuple):
  prediction: str
  sigma_data: float
  exact_trace: bool
  num_probes: int
  probe: str
  rtol: float
  atol: float
  num_steps: int | None
  max_steps: int


def likelihood_range(process: Any, ratio_min: float | None = None, ratio_max: float | None = None):
  """(r0, r1): the noise-to-signal ratios sigma/alpha where the ODE starts (data) and ends (prior)
  by default, from the process's time range (see the module docstring)."""
  proc = as_process(process)
  with jax.ensure_compile_time_eval():
    a, s = proc.alpha_sigma(jnp.asarray([proc.t_min, proc.t_max], jnp.float32))
    a, s = np.asarray(a, np.float64), np.asarray(s, np.float64)
  r = np.where(a > 0, s / np.where(a > 0, a, 1.0), np.inf)
  r0 = max(float(r[0]), RATIO_FLOOR) if ratio_min is None else float(ratio_min)
  r1 = min(float(r[1]), RATIO_CEIL) if ratio_max is None else float(ratio_max)
  if not (0 < r0 < r1 < np.inf):
    raise ArgumentError(f"the ratios sigma/alpha must satisfy 0 < ratio_min < ratio_max; got {r0}, {r1}")
  return r0, r1


def _sum_dims(a):
  return jnp.sum(a.reshape(a.shape[0], -1), axis=1)


def _velocity(model_fn, process, spec: _Spec, cond):
  """(y, u) -> dy/du = r eps_hat(alpha y, t(r)) for a batch y."""

  def f(y, u):
    r = jnp.exp(u)
    t = process.time_at(r)
    a, s = process.alpha_sigma(t)
    x = a * y
    net_in = x
    if spec.prediction == "edm":
      net_in = edm_scalings(s / a, spec.sigma_data)[2] * y
    tb = jnp.full((y.shape[0],), t, jnp.float32)
    out = model_fn(net_in, tb, **cond).astype(jnp.float32)
    _, eps = split_output(spec.prediction, x, a, s, out[..., : y.shape[-1]], spec.sigma_data)
    return r * eps

  return f


def _with_divergence(f, spec: _Spec, probes):
  """(y, u) -> (dy/du, div_y dy/du per example): exact trace or Hutchinson-Skilling."""

  def g(y, u):
    fy = lambda z: f(z, u)
    if spec.exact_trace:
      d = math.prod(y.shape[1:])
      basis = jnp.eye(d, dtype=y.dtype).reshape((d, 1) + y.shape[1:])

      def column(e):  # e_i for every example: (J e_i)_i summed over i gives the trace
        _, jv = jax.jvp(fy, (y,), (jnp.broadcast_to(e, y.shape),))
        return _sum_dims(jv * e)

      v = fy(y)
      div = jnp.sum(jax.vmap(column)(basis), axis=0)
      return v, div

    def probe(z):
      v, jz = jax.jvp(fy, (y,), (z,))
      return v, _sum_dims(jz * z)

    vs, est = jax.vmap(probe)(probes)
    return vs[0], jnp.mean(est, axis=0)

  return g


def _error_norm(err_y, err_d, y0, y1, d0, d1, rtol, atol):
  """Per-example RMS of the scaled error over the dimensions and the log-density; max over the batch."""
  sy = atol + rtol * jnp.maximum(jnp.abs(y0), jnp.abs(y1))
  sd = atol + rtol * jnp.maximum(jnp.abs(d0), jnp.abs(d1))
  n = math.prod(y0.shape[1:]) + 1
  sq = _sum_dims(jnp.square(err_y / sy)) + jnp.square(err_d / sd)
  return jnp.max(jnp.sqrt(sq / n))


def _dopri_step(g, y, d, u, h, k1):
  """One Dormand-Prince step from (y, d) at u of size h; k1 = g(y, u). Returns the 5th-order
  state, the error estimate and g at the new state (the next step's k1)."""
  ks = [k1]
  for i in range(1, 7):
    yi = y + h * sum(a * k[0] for a, k in zip(_A[i], ks) if a != 0.0)
    ks.append(g(yi, u + _C[i] * h))
  # stage 7 is evaluated at the 5th-order solution (b5 == a7), so it is g there: FSAL
  y1 = y + h * sum(b * k[0] for b, k in zip(_B5, ks) if b != 0.0)
  d1 = d + h * sum(b * k[1] for b, k in zip(_B5, ks) if b != 0.0)
  err_y = h * sum(e * k[0] for e, k in zip(_E, ks) if e != 0.0)
  err_d = h * sum(e * k[1] for e, k in zip(_E, ks) if e != 0.0)
  return y1, d1, err_y, err_d, ks[6]


def _integrate(g, y0, u0, u1, spec: _Spec):
  """(y(u1), int div du, accepted steps, evaluations) from y0 at u0."""
  d0 = jnp.zeros((y0.shape[0],), jnp.float32)
  k1 = g(y0, u0)
  if spec.num_steps is not None:
    h = (u1 - u0) / spec.num_steps

    def body(carry, i):
      y, d, k = carry
      y, d, _, _, k = _dopri_step(g, y, d, u0 + i * h, h, k)
      return (y, d, k), None

    (y, d, _), _ = jax.lax.scan(body, (y0, d0, k1), jnp.arange(spec.num_steps, dtype=jnp.float32))
    return y, d, jnp.asarray(spec.num_steps), jnp.asarray(6 * spec.num_steps + 1)

  tol = 1e-6 * jnp.maximum(1.0, jnp.abs(u1))  # the end, up to rounding of u + h

  def cond(c):
    u, _, _, _, _, steps, tries = c
    return (u1 - u > tol) & (tries < spec.max_steps)

  def body(c):
    u, h, y, d, k, steps, tries = c
    h = jnp.minimum(h, u1 - u)
    y1, d1, ey, ed, k_new = _dopri_step(g, y, d, u, h, k)
    norm = _error_norm(ey, ed, y, y1, d, d1, spec.rtol, spec.atol)
    ok = norm <= 1.0
    factor = jnp.clip(0.9 * jnp.where(norm > 0, norm, 1e-10) ** -0.2, 0.2, 10.0)
    keep = lambda new, old: jnp.where(ok, new, old)
    return (
      keep(u + h, u),
      h * factor,
      keep(y1, y),
      keep(d1, d),
      jax.tree_util.tree_map(keep, k_new, k),
      steps + ok.astype(jnp.int32),
      tries + 1,
    )

  h0 = (u1 - u0) / 50.0
  init = (u0, h0, y0, d0, k1, jnp.asarray(0, jnp.int32), jnp.asarray(0, jnp.int32))
  u, _, y, d, _, steps, tries = jax.lax.while_loop(cond, body, init)
  done = u1 - u <= tol
  nan = jnp.float32(jnp.nan)
  return jnp.where(done, y, nan), jnp.where(done, d, nan), steps, 6 * tries + 1


@functools.partial(jax.jit, static_argnums=(1,))
def _likelihood_jit(model_fn, spec: _Spec, process, x0, key, cond, u0, u1):
  x0 = x0.astype(jnp.float32)
  if spec.exact_trace:
    probes = None
  else:
    shape = (spec.num_probes,) + x0.shape
    if spec.probe == "rademacher":
      probes = jax.random.rademacher(key, shape, jnp.float32)
    else:
      probes = jax.random.normal(key, shape, jnp.float32)
  g = _with_divergence(_velocity(model_fn, process, spec, cond), spec, probes)
  y1, delta, steps, nfe = _integrate(g, x0, u0, u1, spec)
  t1 = process.time_at(jnp.exp(u1))
  a1, _ = process.alpha_sigma(t1)
  std = process.prior_std(t1) / a1  # the prior of y = x / alpha
  dims = math.prod(x0.shape[1:])
  prior = -0.5 * _sum_dims(jnp.square(y1 / std)) - dims * (jnp.log(std) + 0.5 * math.log(2 * math.pi))
  return ODELikelihood(prior + delta, prior, delta, steps, nfe, y1, jnp.exp(u0), jnp.exp(u1))


def ode_likelihood(
  model_fn: Callable[..., jnp.ndarray],
  process: Any,
  x0: Any,
  key: jax.Array,
  *,
  prediction: str,
  exact_trace: bool = False,
  num_probes: int = 1,
  probe: str = "rademacher",
  rtol: float = 1e-5,
  atol: float = 1e-5,
  num_steps: int | None = None,
  max_steps: int = 1000,
  cond: Mapping[str, Any] | None = None,
  sigma_data: float | None = None,
  ratio_min: float | None = None,
  ratio_max: float | None = None,
) -> ODELikelihood:
  """log p(x0) of each example by the probability-flow ODE, with its terms and the solver's work.

  model_fn(x_t, t, **cond) -> output in the `prediction` parameterisation (eps | x0 | v | flow |
  edm; a learned variance's extra channels are ignored), `t` in the process's own time (wrap Flax
  modules with `jaxdiff.bind`: new parameters do not recompile). process: any `jaxdiff.processes`
  process or a `Schedule` (the discrete chain). x0: [B, ...] data. key: draws the probes.
  exact_trace: the exact divergence (D model JVPs per evaluation) instead of `num_probes`
  Hutchinson probes (`probe`: "rademacher" | "gaussian"). rtol / atol: the adaptive solver's
  tolerances, or `num_steps` fixed steps (see the module docstring); `max_steps` caps the
  adaptive solver's tries. sigma_data: EDM's, default the process's. ratio_min / ratio_max: the
  ends of the integration in sigma/alpha (`likelihood_range`).
  """
  check_prediction(prediction)
  if probe not in PROBES:
    raise ArgumentError(f"probe must be one of {PROBES}, got {probe!r}")
  if int(num_probes) < 1:
    raise ArgumentError(f"num_probes must be >= 1, got {num_probes}")
  if num_steps is not None and int(num_steps) < 1:
    raise ArgumentError(f"num_steps must be None (adaptive) or >= 1, got {num_steps}")
  if not (rtol > 0 and atol > 0) or int(max_steps) < 1:
    raise ArgumentError(f"rtol, atol and max_steps must be > 0; got {rtol}, {atol}, {max_steps}")
  if not hasattr(x0, "shape") or len(x0.shape) < 2:
    raise ArgumentError(f"x0 must be a batch [B, ...], got shape {getattr(x0, 'shape', None)}")
  proc = as_process(process)
  r0, r1 = likelihood_range(proc, ratio_min, ratio_max)
  sd = float(getattr(proc, "sigma_data", 0.5) if sigma_data is None else sigma_data)
  spec = _Spec(
    prediction,
    sd,
    bool(exact_trace),
    int(num_probes),
    probe,
    float(rtol),
    float(atol),
    None if num_steps is None else int(num_steps),
    int(max_steps),
  )
  if not isinstance(model_fn, jax.tree_util.Partial):
    model_fn = jax.tree_util.Partial(model_fn)
  u0, u1 = jnp.float32(math.log(r0)), jnp.float32(math.log(r1))
  return _likelihood_jit(model_fn, spec, proc, jnp.asarray(x0), key, dict(cond or {}), u0, u1)


def ode_log_likelihood(
  model_fn: Callable[..., jnp.ndarray],
  process: Any,
  x0: Any,
  key: jax.Array,
  *,
  prediction: str,
  exact_trace: bool = False,
  num_probes: int = 1,
  rtol: float = 1e-5,
  atol: float = 1e-5,
  num_steps: int | None = None,
  **kwargs: Any,
) -> jnp.ndarray:
  """log p(x0) per example in nats, [B], by the probability-flow ODE (see `ode_likelihood` for the
  arguments and the module docstring for the conventions). ValueError when the adaptive solver
  reaches max_steps before the end."""
  out = ode_likelihood(
    model_fn,
    process,
    x0,
    key,
    prediction=prediction,
    exact_trace=exact_trace,
    num_probes=num_probes,
    rtol=rtol,
    atol=atol,
    num_steps=num_steps,
    **kwargs,
  )
  if not isinstance(out.log_p, jax.core.Tracer) and not bool(jnp.all(jnp.isfinite(out.log_p))):
    raise ArgumentError(
      f"the ODE solver did not reach the end of the path within max_steps={kwargs.get('max_steps', 1000)} "
      f"({int(out.steps)} steps accepted), or the model returned NaN: raise max_steps, loosen rtol/atol, "
      "or pass num_steps for a fixed grid."
    )
  return out.log_p


def dequantize(x0: Any, key: jax.Array, num_bins: int = 256) -> jnp.ndarray:
  """Uniform dequantisation of data on `num_bins` levels in [-1, 1] (x0 = k * 2 / (num_bins - 1) - 1):
  y = (k + U[0, 1)) * 2 / num_bins - 1, in [-1, 1) (score_sde's (255 x + U) / 256, centred)."""
  x0 = jnp.asarray(x0, jnp.float32)
  k = jnp.round((x0 + 1.0) * (num_bins - 1) / 2.0)
  return (k + jax.random.uniform(key, x0.shape, jnp.float32)) * (2.0 / num_bins) - 1.0


def ode_bits_per_dim_terms(
  model_fn: Callable[..., jnp.ndarray],
  process: Any,
  x0: Any,
  key: jax.Array,
  *,
  prediction: str,
  num_bins: int = 256,
  dequantize_data: bool = True,
  **kwargs: Any,
) -> tuple[jnp.ndarray, ODELikelihood]:
  """(bits/dim [B], the ODELikelihood of the dequantised data) of `ode_bits_per_dim`; NaN where
  the adaptive solver did not finish (no error raised)."""
  if not hasattr(x0, "shape") or len(x0.shape) < 2:
    raise ArgumentError(f"x0 must be a batch [B, ...], got shape {getattr(x0, 'shape', None)}")
  if not isinstance(x0, jax.core.Tracer):
    arr = np.asarray(x0)
    if not np.all(np.isfinite(arr)) or arr.min() < -1.0 - 1e-5 or arr.max() > 1.0 + 1e-5:
      raise ArgumentError(
        f"x0 must lie in [-1, 1] (8-bit data mapped by u / 127.5 - 1); got [{arr.min():.4g}, {arr.max():.4g}]"
      )
  k_deq, k_probe = jax.random.split(key)
  y = dequantize(x0, k_deq, num_bins) if dequantize_data else jnp.asarray(x0, jnp.float32)
  out = ode_likelihood(model_fn, process, y, k_probe, prediction=prediction, **kwargs)
  dims = math.prod(x0.shape[1:])
  return -out.log_p / (dims * math.log(2.0)) + math.log2(num_bins / 2.0), out


def ode_bits_per_dim(
  model_fn: Callable[..., jnp.ndarray],
  process: Any,
  x0: Any,
  key: jax.Array,
  *,
  prediction: str,
  num_bins: int = 256,
  dequantize_data: bool = True,
  **kwargs: Any,
) -> jnp.ndarray:
  """Bits per dimension of 8-bit data x0 ([-1, 1], u / 127.5 - 1) by the probability-flow ODE,
  [B]: -log p(y) / (D ln 2) + log2(num_bins / 2) with y the uniformly dequantised data (`key`
  is split into (dequantisation key, probe key) = jax.random.split(key); see the module
  docstring). kwargs: those of `ode_likelihood`. ValueError when the adaptive solver reaches
  max_steps before the end."""
  bpd, out = ode_bits_per_dim_terms(
    model_fn,
    process,
    x0,
    key,
    prediction=prediction,
    num_bins=num_bins,
    dequantize_data=dequantize_data,
    **kwargs,
  )
  if not isinstance(bpd, jax.core.Tracer) and not bool(jnp.all(jnp.isfinite(bpd))):
    raise ArgumentError(
      f"the ODE solver did not reach the end of the path within max_steps={kwargs.get('max_steps', 1000)} "
      f"({int(out.steps)} steps accepted), or the model returned NaN: raise max_steps, loosen rtol/atol, "
      "or pass num_steps for a fixed grid."
    )
  return bpd
