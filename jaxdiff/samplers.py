"""Samplers: DDPM, DDIM, DPM-Solver++(2M), Euler, Euler ancestral and Heun, each one `lax.scan` in one jit.

`sample(model_fn, schedule, shape, key, ...)` is the entry point. `model_fn(x_t, t, **cond)` returns
the network output (eps, x0 or v, named by `prediction`); `t` is int32 [batch] in [0, T).
A sampler compiles once per (model function, shapes, sampler, step count, options); pass the
network's parameters through `bind(apply_fn, params)` so they are an argument of the compiled
program rather than constants baked into it.

Timestep sequences ("spacings") follow diffusers: `leading` = arange(n) * (T // n) reversed,
`trailing` = round(arange(T, 0, -T/n)) - 1, and `linspace` = round(linspace(T-1, 0, n)).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxdiff import perf
from jaxdiff.schedules import Schedule

__all__ = [
  "SAMPLERS",
  "SPACINGS",
  "VARIANCES",
  "timesteps",
  "step_pairs",
  "nfe",
  "ddim_sigma",
  "bind",
  "sample",
  "repaint_schedule",
  "INPAINT_SAMPLERS",
]

SAMPLERS = ("ddpm", "ddim", "dpmpp_2m", "euler", "euler_ancestral", "heun")
SPACINGS = ("leading", "trailing", "linspace")
VARIANCES = ("fixed_small", "fixed_large", "learned_range")
INPAINT_SAMPLERS = ("ddpm", "ddim", "dpmpp_2m")


def timesteps(num_timesteps: int, num_steps: int, spacing: str = "leading") -> np.ndarray:
  """The descending int timesteps a sampler visits (static: computed in numpy)."""
  T, n = int(num_timesteps), int(num_steps)
  if n < 1 or n > T:
    raise ValueError(f"num_steps must be between 1 and the schedule's T={T}, got {num_steps}.")
  if spacing == "leading":
    ts = (np.arange(n) * (T // n)).round()[::-1]
  elif spacing == "trailing":
    ts = np.round(np.arange(T, 0, -T / n)) - 1
  elif spacing == "linspace":
    ts = np.round(np.linspace(T - 1, 0, n))
  else:
    raise ValueError(f"spacing must be one of {SPACINGS}, got {spacing!r}.")
  return ts.astype(np.int64)


def step_pairs(
  num_timesteps: int, num_steps: int, spacing: str, sampler: str
) -> tuple[np.ndarray, np.ndarray]:
  """(t, t_prev) per step; t_prev = -1 means the clean end (alpha_bar = 1, sigma = 0).

  Every sampler steps to the next timestep of the sequence, except DDIM with `leading` or
  `trailing`, which steps to t - T // n as diffusers' DDIMScheduler does (the same thing
  whenever n divides T).
  """
  ts = timesteps(num_timesteps, num_steps, spacing)
  if sampler == "ddim" and spacing in ("leading", "trailing"):
    prev = ts - num_timesteps // num_steps
  else:
    prev = np.append(ts[1:], -1)
  return ts, np.maximum(prev, -1)


def nfe(sampler: str, num_steps: int, guided: bool = False) -> int:
  """Network evaluations of one sampling run (a guided call evaluates a doubled batch once)."""
  _check_sampler(sampler)
  return 2 * num_steps - 1 if sampler == "heun" else num_steps


def _check_sampler(sampler: str) -> None:
  if sampler not in SAMPLERS:
    raise ValueError(f"Unknown sampler {sampler!r}; choose one of {SAMPLERS}.")


def _gather_ac(schedule: Schedule, ts: np.ndarray) -> jnp.ndarray:
  """alpha_bar at the given timesteps, with index -1 meaning alpha_bar = 1."""
  ac = jnp.take(schedule.alphas_cumprod, jnp.asarray(np.maximum(ts, 0), jnp.int32))
  return jnp.where(jnp.asarray(ts) < 0, 1.0, ac).astype(jnp.float32)


def ddim_sigma(schedule: Schedule, t, t_prev, eta: float = 1.0) -> jnp.ndarray:
  """DDIM's noise std for the step t -> t_prev: eta sqrt((1-a_prev)/(1-a_t)) sqrt(1 - a_t/a_prev)."""
  a_t = _gather_ac(schedule, np.asarray(t))
  a_p = _gather_ac(schedule, np.asarray(t_prev))
  return eta * jnp.sqrt((1.0 - a_p) / (1.0 - a_t)) * jnp.sqrt(1.0 - a_t / a_p)


def bind(apply_fn: Callable[..., Any], params: Any, **fixed: Any) -> jax.tree_util.Partial:
  """model_fn(x, t, **cond) = apply_fn(params, x, t, **fixed, **cond), as a pytree.

  The parameters stay leaves of the pytree, so `sample` passes them into the compiled program
  as arguments (no recompilation for new parameters, no weights embedded as constants).
  """
  return jax.tree_util.Partial(apply_fn, params, **fixed)


class _Spec(NamedTuple):
  sampler: str
  num_steps: int
  prediction: str
  eta: float
  spacing: str
  clip_x0: float | None
  guided: bool
  return_trajectory: bool
  variance: str
  self_condition: bool
  s_churn: float
  s_tmin: float
  s_tmax: float
  s_noise: float
  shape: tuple[int, ...]
  inpaint: bool = False
  repaint_resample: int = 1
  repaint_jump: int = 1
  paste_known: bool = True


def sample(
  model_fn: Callable[..., jnp.ndarray],
  schedule: Schedule,
  shape: tuple[int, ...],
  key: jax.Array,
  *,
  sampler: str = "ddim",
  num_steps: int = 50,
  prediction: str = "eps",
  eta: float | None = None,
  spacing: str = "leading",
  x_init: jnp.ndarray | None = None,
  clip_x0: float | None = None,
  guidance_scale: float | None = None,
  cond: Mapping[str, Any] | None = None,
  uncond: Mapping[str, Any] | None = None,
  return_trajectory: bool = False,
  variance: str = "fixed_small",
  self_condition: bool = False,
  s_churn: float = 0.0,
  s_tmin: float = 0.0,
  s_tmax: float = float("inf"),
  s_noise: float = 1.0,
  inpaint_mask: jnp.ndarray | None = None,
  inpaint_known: jnp.ndarray | None = None,
  repaint_resample: int = 1,
  repaint_jump: int = 1,
  paste_known: bool = True,
):
  """Draw samples of `shape` (batch first) by running the reverse process from pure noise.

  Args:
    model_fn: (x_t, t, **cond) -> output; wrap a Flax module with `bind(model.apply, params)`.
    schedule: the training schedule (`jaxdiff.schedules`).
    sampler: "ddpm" (ancestral; respaced as improved DDPM when num_steps < T), "ddim",
      "dpmpp_2m" (DPM-Solver++ multistep, 2nd order, data prediction), "euler" / "heun" (EDM
      Algorithms 1/2 on the probability-flow ODE in sigma = sqrt((1-a)/a); `s_churn` > 0 adds
      EDM's stochastic churn), "euler_ancestral".
    eta: stochasticity: DDIM's eta (default 0) or Euler ancestral's (default 1).
    spacing: "leading" | "trailing" | "linspace" (module docstring).
    x_init: starting noise at the first timestep of the spacing (default: drawn from `key`).
    clip_x0: clip predicted x0 to [-clip_x0, clip_x0] (None: no clipping).
    guidance_scale: classifier-free guidance; output = uncond + s (cond - uncond), from one
      batched call on [cond; uncond]. Needs `uncond` (e.g. {"y": null labels}).
    cond / uncond: keyword arguments of model_fn for the conditional / unconditional branch. An
      entry of `cond` that `uncond` leaves out is shared by both branches (e.g. `x_cond`); for a
      cross-attention model the unconditional branch is `{"context_mask": all False}` (the null
      context) or `{"context": ..., "context_mask": zeros}`; arrays of any rank are stacked
      along the batch axis, so contexts [B, L, D] and masks [B, L] work as labels [B] do.
    variance: DDPM's "fixed_small" (posterior beta~), "fixed_large" (beta) or "learned_range"
      (the model outputs 2x channels; the second half interpolates log beta~..log beta).
    self_condition: feed the previous step's x0 prediction as `x_self_cond`.
    return_trajectory: also return {"x": x_t before each step and the final sample,
      "x0": x0 predictions, "t": timesteps}.
    inpaint_mask / inpaint_known: inpainting with any model (RePaint, Lugmayr et al. 2022):
      `inpaint_mask` (broadcastable to `shape`, 1 = known, 0 = to generate; fractional values
      blend) and the images `inpaint_known` (`shape`). Before the first step and after every
      step the known region is replaced by `inpaint_known` noised to the new timestep
      (q_sample with fresh noise); the last step lands on the clean image, so with
      `paste_known` the known region of the result equals `inpaint_known` exactly (False keeps
      the model's own final step there). Samplers: ddpm, ddim, dpmpp_2m.
    repaint_resample / repaint_jump: RePaint's resampling: after every `repaint_jump` steps
      (counted from the end, as RePaint's `jump_length`) go back up `repaint_jump` steps by the
      forward process q(x_t | x_t') and denoise them again, `repaint_resample - 1` times
      (`jump_n_sample`); 1 = no resampling. The whole schedule is one `lax.scan`
      (`repaint_schedule` gives it).

  Returns:
    samples (float32, `shape`), or (samples, trajectory) with return_trajectory.
  """
  _check_sampler(sampler)
  from jaxdiff.diffusion import _check_prediction

  _check_prediction(prediction)
  if variance not in VARIANCES:
    raise ValueError(f"variance must be one of {VARIANCES}, got {variance!r}.")
  if eta is None:
    eta = 1.0 if sampler == "euler_ancestral" else 0.0
  if eta < 0:
    raise ValueError(f"eta must be >= 0, got {eta}.")
  guided = guidance_scale is not None
  if guided and uncond is None:
    raise ValueError(
      "guidance_scale needs `uncond`: the model kwargs of the unconditional branch "
      "(for class-conditional models {'y': full(batch, num_classes)})."
    )
  shape = tuple(int(s) for s in shape)
  if x_init is not None and tuple(x_init.shape) != shape:
    raise ValueError(f"x_init has shape {tuple(x_init.shape)}, expected {shape}.")
  timesteps(schedule.num_timesteps, num_steps, spacing)  # validates num_steps and spacing early
  cond, uncond = dict(cond or {}), dict(uncond or {})
  if guided and set(uncond) - set(cond):
    raise ValueError(
      f"uncond has entries {sorted(set(uncond) - set(cond))} that cond lacks; give both "
      "branches the same keyword arguments (entries only in cond are shared)."
    )
  inpaint = _inpaint_arrays(inpaint_mask, inpaint_known, shape, sampler)
  for name, v in (("repaint_resample", repaint_resample), ("repaint_jump", repaint_jump)):
    if isinstance(v, bool) or int(v) != v or v < 1:
      raise ValueError(f"{name} must be an integer >= 1, got {v!r}.")
  if inpaint is None and (repaint_resample != 1 or repaint_jump != 1):
    raise ValueError(
      "repaint_resample / repaint_jump apply to inpainting: pass inpaint_mask and inpaint_known."
    )
  spec = _Spec(
    sampler,
    int(num_steps),
    prediction,
    float(eta),
    spacing,
    None if clip_x0 is None or clip_x0 == 0 else float(clip_x0),
    guided,
    bool(return_trajectory),
    variance,
    bool(self_condition),
    float(s_churn),
    float(s_tmin),
    float(s_tmax),
    float(s_noise),
    shape,
    inpaint is not None,
    int(repaint_resample),
    int(repaint_jump),
    bool(paste_known),
  )
  if isinstance(model_fn, jax.tree_util.Partial):
    fn_leaves, fn_def = jax.tree_util.tree_flatten(model_fn)
    fn_static = ("partial", fn_def)
  else:
    fn_leaves, fn_static = [], ("callable", model_fn)
  scale = jnp.asarray(guidance_scale if guided else 1.0, jnp.float32)
  return _sample_jit(fn_static, spec, fn_leaves, schedule, key, x_init, cond, uncond, scale, inpaint)


def _inpaint_arrays(mask, known, shape, sampler):
  """The inpainting inputs as float32 arrays (mask broadcast to `shape`), or None."""
  if mask is None and known is None:
    return None
  if mask is None or known is None:
    raise ValueError(
      "inpainting needs both inpaint_mask (1 = known) and inpaint_known (the images to complete)."
    )
  if sampler not in INPAINT_SAMPLERS:
    raise ValueError(f"inpainting runs with the samplers {INPAINT_SAMPLERS}, not {sampler!r}.")
  known = jnp.asarray(known, jnp.float32)
  if tuple(known.shape) != shape:
    raise ValueError(f"inpaint_known has shape {tuple(known.shape)}, expected the sample shape {shape}.")
  mask = jnp.asarray(mask, jnp.float32)
  try:
    mask = jnp.broadcast_to(mask, shape)
  except ValueError:
    raise ValueError(
      f"inpaint_mask of shape {tuple(mask.shape)} does not broadcast to the sample shape {shape}."
    ) from None
  return {"mask": mask, "known": known}


def repaint_schedule(num_steps: int, resample: int = 1, jump: int = 1) -> tuple[np.ndarray, np.ndarray]:
  """RePaint's resampling schedule over a sampler's `num_steps` steps, as static arrays.

  Returns (steps, jump_from): the sampler step run at each iteration (step p goes from the p-th
  timestep of the spacing to the next, p = num_steps - 1 lands on the clean image), and, per
  iteration, 0 or the position the state was at before it was sent back up by the forward
  process (jump_from = q > 0: the state, after step q - 1, is re-noised to the level step
  q - jump starts from, and that step runs next). Positions q = num_steps - 1, num_steps - 1 -
  jump, ... (>= jump) are jump points, each taken resample - 1 times, as RePaint's
  `get_schedule_jump(t_T, jump_length, jump_n_sample)`; resample = 1 gives 0..num_steps - 1.
  """
  n, r, j = int(num_steps), int(resample), int(jump)
  if n < 1 or r < 1 or j < 1:
    raise ValueError(f"repaint_schedule needs num_steps, resample and jump >= 1, got {n}, {r}, {j}.")
  left = {q: r - 1 for q in range(n - 1, j - 1, -j)} if r > 1 else {}
  steps, jump_from = [], []
  q, came_from = 0, 0
  while q < n:
    steps.append(q)
    jump_from.append(came_from)
    came_from = 0
    q += 1
    if left.get(q, 0) > 0:
      left[q] -= 1
      came_from = q
      q -= j
  return np.asarray(steps, np.int64), np.asarray(jump_from, np.int64)


_SAMPLE_JITS: dict[tuple, Callable] = {}


def _sample_jitted(options: dict | None = None) -> Callable:
  """`_sample_body` jitted with XLA compiler `options` (default: jaxdiff's current CPU options,
  `jaxdiff.perf`); one jitted function per distinct option set, so each keeps its own
  compilation cache. Options apply only to a top-level call: inside another jit the caller's
  options rule, so there `sample()` uses the option-free function."""
  options = perf.cpu_compiler_options() if options is None else options
  key = tuple(sorted(options.items()))
  fn = _SAMPLE_JITS.get(key)
  if fn is None:
    fn = _SAMPLE_JITS[key] = jax.jit(_sample_body, static_argnums=(0, 1), compiler_options=options or None)
  return fn


def _sample_jit(*args):
  nested = any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree_util.tree_leaves(args[2:]))
  if not nested:
    try:
      return _sample_jitted()(*args)
    except ValueError as e:  # traced from inside an outer jit through closed-over values only
      if "compiler_options" not in str(e):
        raise
  return _sample_jitted({})(*args)


def _sample_body(fn_static, spec: _Spec, fn_leaves, schedule, key, x_init, cond, uncond, scale, inpaint=None):
  kind, obj = fn_static
  model_fn = jax.tree_util.tree_unflatten(obj, fn_leaves) if kind == "partial" else obj
  k_init, k_steps = jax.random.split(key)
  if x_init is None:
    x_init = jax.random.normal(k_init, spec.shape, jnp.float32)
  x_init = x_init.astype(jnp.float32)
  denoise = _make_denoiser(model_fn, spec, cond, uncond, scale)
  runner = {
    "ddpm": _run_ddpm,
    "ddim": _run_ddim,
    "dpmpp_2m": _run_dpmpp_2m,
    "euler": _run_euler,
    "euler_ancestral": _run_euler,
    "heun": _run_euler,
  }[spec.sampler]
  if inpaint is None:
    x, traj = runner(denoise, schedule, spec, x_init, k_steps)
  else:
    x, traj = runner(denoise, schedule, spec, x_init, k_steps, inpaint)
  if spec.return_trajectory:
    return x, traj
  return x


def _make_denoiser(model_fn, spec: _Spec, cond, uncond, scale):
  """(x, t scalar, a_t, x_self_cond) -> (x0, eps, var_frac): guidance, parameterisation, clipping."""
  channels = spec.shape[-1]

  def raw(x, tb, x_sc):
    kw = dict(cond)
    if spec.self_condition:
      kw["x_self_cond"] = x_sc
    if not spec.guided:
      return model_fn(x, tb, **kw)
    ukw = {**cond, **uncond}  # entries only in cond are shared by both branches
    if spec.self_condition:
      ukw["x_self_cond"] = x_sc
    both = jax.tree_util.tree_map(lambda c, u: jnp.concatenate([c, u], axis=0), kw, ukw)
    out = model_fn(jnp.concatenate([x, x], axis=0), jnp.concatenate([tb, tb], axis=0), **both)
    c, u = jnp.split(out, 2, axis=0)
    mean = u[..., :channels] + scale * (c[..., :channels] - u[..., :channels])
    return jnp.concatenate([mean, c[..., channels:]], axis=-1)

  def denoise(x, t, a_t, x_sc):
    tb = jnp.full((x.shape[0],), t, jnp.int32)
    out = raw(x, tb, x_sc).astype(jnp.float32)
    extra = out[..., channels:] if spec.variance == "learned_range" else None
    out = out[..., :channels]
    sa, so = jnp.sqrt(a_t), jnp.sqrt(1.0 - a_t)
    if spec.prediction == "eps":
      eps = out
      x0 = (x - so * eps) / sa
    elif spec.prediction == "x0":
      x0 = out
      eps = (x - sa * x0) / so
    else:
      x0 = sa * x - so * out
      eps = so * x + sa * out
    if spec.clip_x0 is not None:
      x0 = jnp.clip(x0, -spec.clip_x0, spec.clip_x0)
      eps = (x - sa * x0) / so
    return x0, eps, extra

  return denoise


def _noise(key, i, shape):
  return jax.random.normal(jax.random.fold_in(key, i), shape, jnp.float32)


def _traj(spec, x_before, x0):
  return (x_before, x0) if spec.return_trajectory else None


def _finish(spec, x_final, ys, ts):
  if not spec.return_trajectory:
    return x_final, None
  xs, x0s = ys
  return x_final, {
    "x": jnp.concatenate([xs, x_final[None]], axis=0),
    "x0": x0s,
    "t": jnp.asarray(ts, jnp.int32),
  }


def _run_ddpm(denoise, schedule, spec, x, key, inpaint=None):
  ts, prev = step_pairs(schedule.num_timesteps, spec.num_steps, spec.spacing, "ddpm")
  a_t, a_p = _gather_ac(schedule, ts), _gather_ac(schedule, prev)
  beta = 1.0 - a_t / a_p  # the respaced beta (equals the schedule's beta when every step is taken)
  c1 = jnp.sqrt(a_p) * beta / (1.0 - a_t)
  c2 = jnp.sqrt(1.0 - beta) * (1.0 - a_p) / (1.0 - a_t)
  small = beta * (1.0 - a_p) / (1.0 - a_t)
  # log beta~ clipped as improved DDPM does: the last step (beta~ = 0, no noise added) reuses the
  # value of the step before it.
  log_small = jnp.log(
    jnp.concatenate([small[:-1], small[-2:-1]]) if len(ts) > 1 else jnp.maximum(small, 1e-20)
  )
  log_large = jnp.log(beta)
  last = jnp.asarray(prev < 0)
  xs = (jnp.arange(len(ts)), jnp.asarray(ts, jnp.int32), a_t, c1, c2, small, beta, log_small, log_large, last)

  def step(carry, inp):
    x, x_sc = carry
    i, t, at, k1, k2, vs, vl, lvs, lvl, is_last = inp
    x0, _, extra = denoise(x, t, at, x_sc)
    mean = k1 * x0 + k2 * x
    if spec.variance == "fixed_small":
      log_var = jnp.log(jnp.maximum(vs, 1e-20))
    elif spec.variance == "fixed_large":
      log_var = jnp.log(vl)
    else:
      frac = (extra + 1.0) / 2.0
      log_var = frac * lvl + (1.0 - frac) * lvs
    z = _noise(key, i, x.shape)
    x_new = mean + jnp.where(is_last, 0.0, jnp.exp(0.5 * log_var)) * z
    return (x_new, x0), _traj(spec, x, x0)

  return _scan_steps(step, xs, ts, prev, schedule, spec, x, key, inpaint, noise_index=0)


def _run_ddim(denoise, schedule, spec, x, key, inpaint=None):
  ts, prev = step_pairs(schedule.num_timesteps, spec.num_steps, spec.spacing, "ddim")
  a_t, a_p = _gather_ac(schedule, ts), _gather_ac(schedule, prev)
  sigma = spec.eta * jnp.sqrt((1.0 - a_p) / (1.0 - a_t)) * jnp.sqrt(1.0 - a_t / a_p)
  xs = (jnp.arange(len(ts)), jnp.asarray(ts, jnp.int32), a_t, a_p, sigma)

  def step(carry, inp):
    x, x_sc = carry
    i, t, at, ap, sig = inp
    x0, eps, _ = denoise(x, t, at, x_sc)
    direction = jnp.sqrt(jnp.maximum(1.0 - ap - sig**2, 0.0)) * eps
    x_new = jnp.sqrt(ap) * x0 + direction
    if spec.eta > 0:
      x_new = x_new + sig * _noise(key, i, x.shape)
    return (x_new, x0), _traj(spec, x, x0)

  return _scan_steps(step, xs, ts, prev, schedule, spec, x, key, inpaint, noise_index=0)


def _run_dpmpp_2m(denoise, schedule, spec, x, key, inpaint=None):
  """DPM-Solver++(2M) in data prediction, first order at the first and the final step.

  With alpha = sqrt(a), sigma = sqrt(1 - a), lambda = log(alpha / sigma), h = lambda_t - lambda_s:
  x_t = (sigma_t / sigma_s) x_s - alpha_t (e^{-h} - 1) (D0 + D1 / 2), D1 = (D0 - D0_prev) / r,
  r = h_prev / h. e^{-h} is formed as a ratio, so the final step to sigma = 0 needs no infinity.
  """
  ts, prev = step_pairs(schedule.num_timesteps, spec.num_steps, spec.spacing, "dpmpp_2m")
  a_s, a_t = _gather_ac(schedule, ts), _gather_ac(schedule, prev)
  al_s, sg_s = jnp.sqrt(a_s), jnp.sqrt(1.0 - a_s)
  al_t, sg_t = jnp.sqrt(a_t), jnp.sqrt(1.0 - a_t)
  exp_neg_h = (sg_t * al_s) / (al_t * sg_s)
  final = jnp.asarray(prev < 0)
  lam_s = jnp.log(al_s) - jnp.log(sg_s)
  lam_t = jnp.where(final, 0.0, jnp.log(al_t) - jnp.log(jnp.where(final, 1.0, sg_t)))
  h = jnp.where(final, 1.0, lam_t - lam_s)
  h_prev = jnp.concatenate([jnp.ones((1,), h.dtype), h[:-1]])
  r = h_prev / h
  second = jnp.asarray((np.arange(len(ts)) > 0) & (prev >= 0))
  xs = (jnp.asarray(ts, jnp.int32), a_s, sg_t / sg_s, al_t, exp_neg_h, r, second)

  def step(carry, inp):
    x, d_prev = carry
    t, at, ratio, alt, emh, r_i, use2 = inp
    x0, _, _ = denoise(x, t, at, d_prev)
    d = jnp.where(use2, x0 + 0.5 * (x0 - d_prev) / r_i, x0)
    x_new = ratio * x - alt * (emh - 1.0) * d
    return (x_new, x0), _traj(spec, x, x0)

  # After a RePaint jump the multistep history is stale: first order there.
  return _scan_steps(step, xs, ts, prev, schedule, spec, x, key, inpaint, history=len(xs) - 1)


# Keys of the inpainting noise, folded into the sampler's step key (step noise uses the step index).
_TAG_KNOWN, _TAG_JUMP, _TAG_KNOWN_INIT = 1_000_003, 1_000_004, 1_000_005


def _scan_steps(step, xs, ts, prev, schedule, spec, x, key, inpaint, **inpaint_kw):
  """Run a sampler's `step` over its per-step inputs `xs` in one lax.scan (carry: x and the last
  x0 prediction), or through the inpainting / RePaint schedule when `inpaint` is given."""
  if inpaint is not None:
    return _run_inpaint(step, xs, ts, prev, schedule, spec, x, key, inpaint, **inpaint_kw)
  (x_final, _), ys = jax.lax.scan(step, (x, jnp.zeros_like(x)), xs)
  return _finish(spec, x_final, ys, ts)


def _run_inpaint(step, xs, ts, prev, schedule, spec, x, key, inpaint, noise_index=None, history=None):
  """Run a sampler's `step` over RePaint's schedule with the known region replaced, as one scan.

  Iteration k runs step p_k of the plain sampler on the state that, if a jump lands here, was
  first re-noised by the forward process from the level it had reached to the level step p_k
  starts from: x <- sqrt(a_to / a_from) x + sqrt(1 - a_to / a_from) z (ratio 1 and std 0 when
  there is no jump: the same arithmetic every iteration, no branch). After the step the known
  region becomes q_sample(known, t_prev) with fresh noise, which at the clean end (a = 1) is the
  known image itself. `noise_index`: the position in `xs` of the per-step noise index (replaced
  by the iteration number, so repeated steps draw new noise); `history`: the position of the
  multistep flag to clear after a jump.
  """
  mask, known = inpaint["mask"], inpaint["known"]
  steps, jump_from = repaint_schedule(len(ts), spec.repaint_resample, spec.repaint_jump)
  m = len(steps)
  gathered = list(jax.tree_util.tree_map(lambda a: a[steps], xs))
  if noise_index is not None:
    gathered[noise_index] = jnp.arange(m)
  jumped = jump_from > 0
  if history is not None:
    gathered[history] = gathered[history] & jnp.asarray(~jumped)
  a_start = _gather_ac(schedule, ts)  # level step p starts from
  a_end = _gather_ac(schedule, prev)  # level step p lands on
  a_from = jnp.where(jnp.asarray(jumped), a_end[np.maximum(jump_from - 1, 0)], 1.0)
  a_to = jnp.where(jnp.asarray(jumped), a_start[steps], 1.0)
  jump_scale, jump_std = jnp.sqrt(a_to / a_from), jnp.sqrt(jnp.maximum(1.0 - a_to / a_from, 0.0))
  a_after = a_end[steps]
  weight = np.ones(m, np.float32)
  if not spec.paste_known:
    weight[steps == len(ts) - 1] = 0.0  # keep the model's own last step in the known region
  k_known, k_jump = jax.random.fold_in(key, _TAG_KNOWN), jax.random.fold_in(key, _TAG_JUMP)

  def known_at(a, noise):
    return jnp.sqrt(a) * known + jnp.sqrt(1.0 - a) * noise

  def replace(x_cur, a, noise, w):
    mw = mask * w
    return mw * known_at(a, noise) + (1.0 - mw) * x_cur

  def body(carry, inp):
    k, scale_k, std_k, a_k, w_k, step_inp = inp
    x_cur, aux = carry
    x_cur = scale_k * x_cur + std_k * _noise(k_jump, k, x_cur.shape)
    (x_new, aux), ys = step((x_cur, aux), step_inp)
    x_new = replace(x_new, a_k, _noise(k_known, k, x_new.shape), w_k)
    return (x_new, aux), ys

  x = replace(x, a_start[0], _noise(jax.random.fold_in(key, _TAG_KNOWN_INIT), 0, x.shape), 1.0)
  inputs = (jnp.arange(m), jump_scale, jump_std, a_after, jnp.asarray(weight), tuple(gathered))
  (x_final, _), ys = jax.lax.scan(body, (x, jnp.zeros_like(x)), inputs)
  return _finish(spec, x_final, ys, np.asarray(ts)[steps])


def _run_euler(denoise, schedule, spec, x, key):
  """Euler / Euler ancestral / Heun on dx~/dsigma = eps, with x~ = x_t / sqrt(a), sigma = sqrt((1-a)/a)."""
  ts, prev = step_pairs(schedule.num_timesteps, spec.num_steps, spec.spacing, spec.sampler)
  a_s, a_n = _gather_ac(schedule, ts), _gather_ac(schedule, prev)
  sig_s, sig_n = jnp.sqrt((1.0 - a_s) / a_s), jnp.sqrt((1.0 - a_n) / a_n)
  n = len(ts)
  heun = spec.sampler == "heun"
  churn = spec.s_churn > 0 and spec.sampler in ("euler", "heun")
  if churn:
    all_sig = jnp.sqrt((1.0 - schedule.alphas_cumprod) / schedule.alphas_cumprod)
    log_all = jnp.log(all_sig)
    gamma = min(spec.s_churn / n, math.sqrt(2.0) - 1.0)

  def churned(x_tilde, t, sig, i):
    """EDM churn, snapped to the integer timestep whose sigma is nearest sigma (1 + gamma)."""
    g = jnp.where((sig >= spec.s_tmin) & (sig <= spec.s_tmax), gamma, 0.0)
    target = jnp.log(sig * (1.0 + g))
    j = jnp.clip(jnp.searchsorted(log_all, target), 1, schedule.num_timesteps - 1)
    j = jnp.where(jnp.abs(log_all[j - 1] - target) < jnp.abs(log_all[j] - target), j - 1, j)
    j = jnp.maximum(j, t)
    sig_hat = all_sig[j]
    z = _noise(jax.random.fold_in(key, 1), i, x_tilde.shape)
    x_hat = x_tilde + jnp.sqrt(jnp.maximum(sig_hat**2 - sig**2, 0.0)) * spec.s_noise * z
    return x_hat, j, sig_hat

  def eval_eps(x_tilde, t, sig, x_sc):
    a = 1.0 / (1.0 + sig**2)
    x0, eps, _ = denoise(x_tilde * jnp.sqrt(a), t, a, x_sc)
    return x0, eps

  def euler_part(carry, inp):
    x_tilde, x_sc = carry
    i, t, t_n, s, s_n = inp
    if churn:
      x_tilde, t, s = churned(x_tilde, t, s, i)
    x0, eps = eval_eps(x_tilde, t, s, x_sc)
    if spec.sampler == "euler_ancestral":
      s_up = jnp.minimum(s_n, spec.eta * jnp.sqrt(jnp.maximum(s_n**2 * (s**2 - s_n**2) / s**2, 0.0)))
      s_down = jnp.sqrt(jnp.maximum(s_n**2 - s_up**2, 0.0))
      x_new = x_tilde + (s_down - s) * eps + s_up * _noise(key, i, x_tilde.shape)
    else:
      x_new = x_tilde + (s_n - s) * eps
    return x_tilde, x_new, x0, eps, s

  def step(carry, inp):
    i, t, t_n, s, s_n = inp
    x_cur, x_new, x0, eps, s_used = euler_part(carry, inp)
    if heun:  # every scanned step has s_n > 0; the last (to sigma = 0) is the plain Euler tail
      _, eps2 = eval_eps(x_new, t_n, s_n, x0)
      x_new = x_cur + (s_n - s_used) * 0.5 * (eps + eps2)
    before = carry[0] / jnp.sqrt(1.0 + s**2)
    return (x_new, x0), _traj(spec, before, x0)

  xs = (jnp.arange(n), jnp.asarray(ts, jnp.int32), jnp.asarray(np.maximum(prev, 0), jnp.int32), sig_s, sig_n)
  x_tilde = x * jnp.sqrt(1.0 + sig_s[0] ** 2)
  carry = (x_tilde, jnp.zeros_like(x))
  if heun:
    body = jax.tree_util.tree_map(lambda a: a[:-1], xs)
    tail = jax.tree_util.tree_map(lambda a: a[-1], xs)
    carry, ys = jax.lax.scan(step, carry, body)
    before_tail = carry[0] / jnp.sqrt(1.0 + tail[3] ** 2)
    _, x_new, x0, _, _ = euler_part(carry, tail)
    if spec.return_trajectory:
      ys = (jnp.concatenate([ys[0], before_tail[None]]), jnp.concatenate([ys[1], x0[None]]))
    x_final = x_new
  else:
    (x_final, _), ys = jax.lax.scan(step, carry, xs)
  # The last step lands on sigma = 0 (alpha_bar = 1): x~ is the sample itself.
  return _finish(spec, x_final, ys, ts)
