"""`jaxdiff.sample`: any registered sampler on any process, the whole loop one `lax.scan` in one jit.

`model_fn(x, t, **cond)` returns the network output (named by `prediction`); `t` is [batch] in the
process's time (int32 timesteps when every grid time of a discrete chain is an integer). A sampler
compiles once per (model function, shapes, sampler and options, step count); pass the network's
parameters through `bind(apply_fn, params)` so they are arguments of the compiled program rather
than constants baked into it. `Stepper` (`stepper.py`) runs the same steps one at a time.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxdiff import grids, perf
from jaxdiff.diffusion import check_prediction, edm_scalings, split_output
from jaxdiff.errors import SamplingError
from jaxdiff.processes import as_process
from jaxdiff.samplers.base import Context, Denoised, Sampler, State, StepInput, get
from jaxdiff.samplers.inpaint import inpaint_arrays, run_inpaint

__all__ = [
  "sample",
  "bind",
  "nfe",
  "make_sampler",
  "accepted_options",
  "plan_grid",
  "Grid",
  "Guidance",
  "GUIDANCE_SCALE_KEY",
]

# The per-step guidance scale (`guidance_schedule`) travels with each step's inputs under this key.
GUIDANCE_SCALE_KEY = "guidance_scale"

# Where a process reaches zero SNR at the top (alpha = 0), runs that divide by alpha (eps or edm
# predictions, the sigma frame, churn, multistep log-SNR) start from alpha = 2^-12 sigma (abar =
# 2^-24 on VP chains), as diffusers does; the others (flow/v/x0 predictions with DDIM, DDPM, Euler,
# flow-frame Heun) handle alpha = 0 exactly.
TOP_ALPHA_FLOOR = 2.0**-12


def bind(apply_fn: Callable[..., Any], params: Any, **fixed: Any) -> jax.tree_util.Partial:
  """model_fn(x, t, **cond) = apply_fn(params, x, t, **fixed, **cond), as a pytree.

  The parameters stay leaves of the pytree, so `sample` passes them into the compiled program
  as arguments (no recompilation for new parameters, no weights embedded as constants).
  """
  return jax.tree_util.Partial(apply_fn, params, **fixed)


def make_sampler(sampler: str | Sampler, **options: Any) -> Sampler:
  """A Sampler object from a registry name and its options (options given as None are omitted)."""
  options = {k: v for k, v in options.items() if v is not None}
  if isinstance(sampler, Sampler):
    if options:
      raise SamplingError(
        f"options {sorted(options)} were given with a Sampler object; set them on the object "
        "(sampler.replace(...))."
      )
    smp = sampler
  else:
    smp = get(sampler)(**options)
  smp.check_scalars()
  return smp


def accepted_options(sampler: str, **options: Any) -> dict[str, Any]:
  """The subset of `options` the named sampler takes (None values dropped): for callers that hold
  settings for every sampler (a config), so each sampler receives only its own."""
  takes = get(sampler).options
  return {k: v for k, v in options.items() if k in takes and v is not None}


def nfe(sampler: str | Sampler, num_steps: int, guided: bool = False, **options: Any) -> int:
  """Network evaluations of one sampling run (a guided call evaluates a doubled batch once)."""
  return make_sampler(sampler, **options).nfe(num_steps)


class Grid(NamedTuple):
  """A run's static levels: model times, the times each step lands on, and where that is clean."""

  ts: np.ndarray
  prev: np.ndarray
  clean: np.ndarray
  integer: bool
  max_orders: np.ndarray


def plan_grid(process, smp: Sampler, num_steps: int | None, ts=None, spacing: str | None = None) -> Grid:
  """The grid of a run: `ts` if given, else the process's default (classic spacings on chains)."""
  proc = as_process(process)
  if ts is not None:
    if spacing is not None:
      raise SamplingError("give either `spacing` (classic discrete grids) or `ts`, not both.")
    grid = grids.check_grid(ts, num_steps)
    proc.check_times(grid)
    prev = np.append(grid[1:], -1.0 if proc.discrete else 0.0)
  elif proc.discrete:
    n = 50 if num_steps is None else int(num_steps)
    kind = spacing or "leading"
    grid = grids.spacing(proc.num_timesteps, n, kind)
    if smp.stride_steps and kind in ("leading", "trailing"):
      prev = grid - proc.num_timesteps // n
    else:
      prev = np.append(grid[1:], -1)
    prev = np.maximum(prev, -1)
  else:
    if spacing is not None:
      raise SamplingError(
        f"spacing={spacing!r} applies to discrete chains; for {type(proc).__name__} pass ts= "
        "(e.g. jaxdiff.grids.karras, grids.flow) or leave the process's default grid."
      )
    n = 50 if num_steps is None else int(num_steps)
    own = getattr(smp, "default_grid", None)  # a sampler with a grid of its own (one-step samplers)
    grid = np.asarray(proc.default_grid(n) if own is None else own(proc, n), np.float64)
    prev = np.append(grid[1:], 0.0)
  n = len(grid)
  clean = np.zeros(n, bool)
  clean[-1] = True
  if proc.discrete:
    clean |= prev < 0
  integer = bool(proc.discrete and np.all(grid == np.round(grid)) and np.all(prev == np.round(prev)))
  return Grid(np.asarray(grid), np.asarray(prev), clean, integer, smp.max_orders(n))


class _Static(NamedTuple):
  """Everything that shapes the compiled program (hashable) besides the sampler's static fields."""

  shape: tuple[int, ...]
  prediction: str
  sigma_data: float
  clip_x0: float | None
  guided: bool
  self_condition: bool
  return_trajectory: bool
  integer: bool
  variance: bool  # the model's output carries learned-variance channels the sampler reads
  repaint_resample: int = 1
  repaint_jump: int = 1
  paste_known: bool = True
  dtype: str = "float32"  # the state's, levels' and model output's dtype (float64: x_init's, under x64)


def _run_dtype(x_init) -> str:
  """float64 where x_init is a float64 array (with jax_enable_x64), else float32."""
  if x_init is not None and jnp.asarray(x_init).dtype == jnp.float64:
    return "float64"
  return "float32"


class Guidance(NamedTuple):
  """Classifier-free guidance's values, arguments of the compiled program (new values never recompile).

  A field left None is a feature not used: nothing of it is traced, so a run without them is the
  program plain guidance compiles to.
    scale: the guidance scale s (a scalar; with `schedule`, the step's own is used).
    rescale: phi of guidance rescale (Lin et al. 2024), in the model's output space.
    interval: (lo, hi) in the process's time: guided where lo <= t <= hi, plain conditional elsewhere.
    schedule: [num_steps] scales, one per step.
  """

  scale: Any
  rescale: Any = None
  interval: Any = None
  schedule: Any = None


def _rescaled(guided, cond_out, phi):
  """Lin et al. 2024: guided x std(cond) / std(guided), per sample over all non-batch axes, mixed by phi."""
  axes = tuple(range(1, guided.ndim))
  std_c = jnp.std(cond_out, axis=axes, keepdims=True)
  std_g = jnp.std(guided, axis=axes, keepdims=True)
  ratio = jnp.where(std_g > 0, std_c / jnp.where(std_g > 0, std_g, 1.0), 1.0)
  return phi * (guided * ratio) + (1.0 - phi) * guided


def _denoiser(model_fn, st: _Static, cond, uncond, guide: Guidance) -> Callable[..., Denoised]:
  """(x, t scalar, alpha, sigma, x_self_cond) -> Denoised: guidance, parameterisation, clipping."""
  channels = st.shape[-1]
  wants_var = st.variance
  scale = guide.scale

  def raw(x, tb, x_sc, t, rb=None):
    kw = dict(cond)
    if st.self_condition:
      kw["x_self_cond"] = x_sc
    if rb is not None:  # a two-time network (one-step samplers): the time the step lands on
      kw["r"] = rb
    if not st.guided:
      return model_fn(x, tb, **kw)
    ukw = {**cond, **uncond}  # entries only in cond are shared by both branches
    if st.self_condition:
      ukw["x_self_cond"] = x_sc
    if rb is not None:
      ukw["r"] = rb
    both = jax.tree_util.tree_map(lambda c, u: jnp.concatenate([c, u], axis=0), kw, ukw)
    out = model_fn(jnp.concatenate([x, x], axis=0), jnp.concatenate([tb, tb], axis=0), **both)
    c, u = jnp.split(out, 2, axis=0)
    mean = u[..., :channels] + scale * (c[..., :channels] - u[..., :channels])
    if guide.rescale is not None:
      mean = _rescaled(mean, c[..., :channels], guide.rescale)
    if guide.interval is not None:  # a select, not a branch: both branches' outputs exist anyway
      tf = jnp.asarray(t, jnp.float32)
      inside = (tf >= guide.interval[0]) & (tf <= guide.interval[1])
      mean = jnp.where(inside, mean, c[..., :channels])
    return jnp.concatenate([mean, c[..., channels:]], axis=-1)

  def denoise(x, t, alpha, sigma, x_sc, r=None):
    t = jnp.asarray(t)
    # integer timesteps go to the model as they are; a fractional time (a custom step between the
    # grid's levels) goes as it is too, so the model sees the level whose alpha and sigma are used
    int_t = st.integer and jnp.issubdtype(t.dtype, jnp.integer)
    tb = jnp.full((x.shape[0],), t, jnp.int32 if int_t else st.dtype)
    rb = None if r is None else jnp.full((x.shape[0],), r, jnp.float32)
    net_in = x
    if st.prediction == "edm":
      net_in = edm_scalings(sigma / alpha, st.sigma_data)[2] * x / alpha
    out = raw(net_in, tb, x_sc, t, rb).astype(st.dtype)
    if out.shape[:-1] != x.shape[:-1] or out.shape[-1] not in (channels, 2 * channels):
      raise SamplingError(
        f"model_fn returned shape {tuple(out.shape)} for an input of shape {tuple(x.shape)}: it must "
        "return the input's shape (batch first; twice the channels with a learned variance)."
      )
    if wants_var and out.shape[-1] != 2 * channels:
      raise SamplingError(
        f"variance='learned_range' needs a model output with 2 x {channels} channels "
        f"(prediction, variance), got {out.shape[-1]}."
      )
    extra = out[..., channels:] if wants_var else None
    x0, eps = split_output(st.prediction, x, alpha, sigma, out[..., :channels], st.sigma_data)
    model_eps = eps
    if st.clip_x0 is not None:
      x0 = jnp.clip(x0, -st.clip_x0, st.clip_x0)
      eps = (x - alpha * x0) / sigma
    return Denoised(x0, eps, extra, model_eps)

  return denoise


def _step_inputs(st: _Static, smp: Sampler, process, ts, prev, clean, max_orders, schedule=None) -> StepInput:
  """Every step's levels as arrays (the scan's inputs), from the grid's times (`schedule`: per-step
  guidance scales)."""
  proc = as_process(process)
  a, s = (v.astype(st.dtype) for v in proc.alpha_sigma(ts))
  a_n, s_n = (v.astype(st.dtype) for v in proc.alpha_sigma(prev))
  a_n, s_n = jnp.where(clean, 1.0, a_n), jnp.where(clean, 0.0, s_n)
  if smp.caps_top(proc) or st.prediction in ("eps", "edm"):  # both divide by alpha
    a = jnp.where(a > 0, a, TOP_ALPHA_FLOOR * s)  # only where alpha is exactly 0 (zero terminal SNR)
  n = ts.shape[0]
  extra = smp.prepare(a, s, a_n, s_n)
  if schedule is not None:
    extra = {**extra, GUIDANCE_SCALE_KEY: jnp.asarray(schedule, jnp.float32)}
  return StepInput(
    index=jnp.arange(n),
    t=ts,
    t_next=prev,
    alpha=a,
    sigma=s,
    alpha_next=a_n,
    sigma_next=s_n,
    max_order=jnp.asarray(max_orders, jnp.int32),
    restart=jnp.arange(n) == 0,
    clean=jnp.asarray(clean),
    extra=extra,
  )


def _take(inputs: StepInput, i) -> StepInput:
  return jax.tree_util.tree_map(lambda a: a[i], inputs)


def _context(model_fn, st: _Static, proc, key, cond, uncond, guide: Guidance) -> Context:
  """The steps' context; with a guidance schedule, each step's denoiser takes that step's scale."""
  at_step = None
  if guide.schedule is not None:

    def at_step(inp: StepInput):
      return _denoiser(model_fn, st, cond, uncond, guide._replace(scale=inp.extra[GUIDANCE_SCALE_KEY]))

  return Context(_denoiser(model_fn, st, cond, uncond, guide), proc, key, st.integer, at_step, st.dtype)


def _sample_body(st: _Static, smp: Sampler, model_fn, process, ts, prev, clean, max_orders, key, x_init, cond,
                 uncond, guide, inpaint):  # fmt: skip
  proc = as_process(process)
  k_init, k_steps = jax.random.split(key)
  if x_init is None:
    x_init = proc.prior_std(ts[0].astype(st.dtype)) * jax.random.normal(k_init, st.shape, st.dtype)
  x = jnp.broadcast_to(jnp.asarray(x_init, st.dtype), st.shape)
  ctx = _context(model_fn, st, proc, k_steps, cond, uncond, guide)
  inputs = _step_inputs(st, smp, proc, ts, prev, clean, max_orders, guide.schedule)
  state = State(x, jnp.zeros_like(x), smp.init(x))
  if inpaint is not None:
    state, ys, steps = run_inpaint(smp, ctx, state, inputs, inpaint, st)
    return _finish(st, state.x, ys, ts[jnp.asarray(steps)])

  def body(carry, inp):
    x_before = carry.x
    carry, x0 = smp.step(ctx.for_step(inp), carry, inp, False)
    return carry, ((x_before, x0) if st.return_trajectory else None)

  if not smp.split_final:
    state, ys = jax.lax.scan(body, state, inputs)
    return _finish(st, state.x, ys, ts)
  n = ts.shape[0]
  state, ys = jax.lax.scan(body, state, _take(inputs, slice(0, n - 1)))
  x_before = state.x
  last = _take(inputs, n - 1)
  state, x0 = smp.step(ctx.for_step(last), state, last, True)
  if st.return_trajectory:
    ys = (jnp.concatenate([ys[0], x_before[None]]), jnp.concatenate([ys[1], x0[None]]))
  return _finish(st, state.x, ys, ts)


def _finish(st: _Static, x_final, ys, ts):
  if not st.return_trajectory:
    return x_final
  xs, x0s = ys
  return x_final, {"x": jnp.concatenate([xs, x_final[None]], axis=0), "x0": x0s, "t": ts}


_SAMPLE = perf.jit(_sample_body, static_argnums=(0,))
_SAMPLE_JITS = _SAMPLE.cache


def _sample_jitted(options: dict | None = None):
  """The jitted sampler program for XLA compiler `options` (default: jaxdiff's current CPU options)."""
  return _SAMPLE.jitted(perf.cpu_compiler_options() if options is None else options)


def _as_pytree_fn(model_fn):
  """Any callable as a pytree (a Partial's bound arrays are leaves: new params never recompile)."""
  if isinstance(model_fn, jax.tree_util.Partial):
    return model_fn
  if not callable(model_fn):
    raise TypeError(f"model_fn must be callable, got {type(model_fn).__name__}.")
  return jax.tree_util.Partial(model_fn)


def _check_shape(shape) -> tuple[int, ...]:
  shape = tuple(int(s) for s in shape)
  if len(shape) < 2 or shape[0] < 1:
    raise SamplingError(
      f"shape must be (batch, *example_shape), e.g. (16, 2) for 2-D points or (16, 28, 28, 1) for "
      f"images; got {shape}. For one example use batch 1: (1, *example_shape)."
    )
  return shape


def _check_batch(name: str, kwargs: Mapping[str, Any], batch: int, guided: bool) -> None:
  """Every conditioning array has the sample batch first (one entry per sample)."""
  for path, leaf in jax.tree_util.tree_flatten_with_path(kwargs)[0]:
    where = f"{name}{jax.tree_util.keystr(path)}"
    shape = tuple(np.shape(leaf))
    if not shape:
      if guided:
        raise SamplingError(
          f"{where} is a scalar; with guidance every conditioning entry needs the batch axis "
          f"first (length {batch}, one per sample), so that [cond; uncond] can be stacked."
        )
      continue
    if shape[0] != batch:
      raise SamplingError(
        f"{where} has shape {shape}, but the sample batch (shape[0]) is {batch}: conditioning "
        f"arrays need one entry per sample along axis 0 (e.g. labels of shape ({batch},))."
      )


def _scalar(name: str, value, lo: float | None = None, hi: float | None = None):
  """A float32 scalar argument of the program, its concrete value checked (traced ones pass)."""
  if np.shape(value) != ():
    raise SamplingError(f"{name} must be a scalar, got shape {np.shape(value)}.")
  if not isinstance(value, jax.core.Tracer):
    v = float(np.asarray(value, np.float64))
    if not np.isfinite(v) or (lo is not None and v < lo) or (hi is not None and v > hi):
      rng = "" if lo is None else f" in [{lo}, {hi}]" if hi is not None else f" >= {lo}"
      raise SamplingError(f"{name} must be a finite number{rng}, got {value!r}.")
  return jnp.asarray(value, jnp.float32)


def _check_cond(
  guidance_scale, cond, uncond, shape=None, *, rescale=None, interval=None, schedule=None, num_steps=None
):
  """(guided, cond, uncond, Guidance): the conditioning and guidance arguments, checked before tracing."""
  if guidance_scale is not None and schedule is not None:
    raise SamplingError("give either guidance_scale or guidance_schedule (a scale per step), not both.")
  guided = guidance_scale is not None or schedule is not None
  what = "guidance_scale" if schedule is None else "guidance_schedule"
  if guided and uncond is None:
    raise SamplingError(
      f"{what} needs `uncond`: the model kwargs of the unconditional branch "
      "(for class-conditional models {'y': full(batch, num_classes)})."
    )
  if not guided:
    for name, v in (("guidance_rescale", rescale), ("guidance_interval", interval)):
      if v is not None:
        raise SamplingError(
          f"{name} modifies classifier-free guidance: also pass guidance_scale (or guidance_schedule) and uncond."
        )
  cond, uncond = dict(cond or {}), dict(uncond or {})
  if guided and set(uncond) - set(cond):
    raise SamplingError(
      f"uncond has entries {sorted(set(uncond) - set(cond))} that cond lacks; give both "
      "branches the same keyword arguments (entries only in cond are shared)."
    )
  if shape is not None:
    _check_batch("cond", cond, shape[0], guided)
    _check_batch("uncond", uncond, shape[0], guided)
  scale = _scalar("guidance_scale", guidance_scale) if guidance_scale is not None else jnp.float32(1.0)
  guide = Guidance(scale)
  if rescale is not None:
    guide = guide._replace(rescale=_scalar("guidance_rescale", rescale, 0.0, 1.0))
  if interval is not None:
    pair = (
      isinstance(interval, (tuple, list)) and len(interval) == 2 and all(np.shape(v) == () for v in interval)
    )
    if not (pair or np.shape(interval) == (2,)):
      raise SamplingError(
        f"guidance_interval must be a pair (lo, hi) in the process's time, got {interval!r}."
      )
    if not isinstance(interval, jax.core.Tracer) and not any(
      isinstance(v, jax.core.Tracer) for v in interval
    ):
      lo, hi = (float(np.asarray(v, np.float64)) for v in interval)
      if np.isnan(lo) or np.isnan(hi) or lo > hi:
        raise SamplingError(f"guidance_interval=(lo, hi) needs lo <= hi, got {tuple(interval)!r}.")
    guide = guide._replace(interval=jnp.stack([jnp.asarray(v, jnp.float32) for v in interval]))
  if schedule is not None:
    shp = np.shape(schedule)
    if len(shp) != 1 or (num_steps is not None and shp[0] != num_steps):
      raise SamplingError(f"guidance_schedule must hold one scale per step ({num_steps}), got shape {shp}.")
    if not isinstance(schedule, jax.core.Tracer) and not np.all(
      np.isfinite(np.asarray(schedule, np.float64))
    ):
      raise SamplingError("guidance_schedule contains NaN or Inf.")
    guide = guide._replace(schedule=jnp.asarray(schedule, jnp.float32))
  return guided, cond, uncond, guide


def _static(
  smp, proc, shape, prediction, sigma_data, clip_x0, guided, self_condition, trajectory, grid, **kw
):
  check_prediction(prediction)
  if sigma_data is None:
    sigma_data = getattr(proc, "sigma_data", 0.5)
  smp.check_process(proc)
  return _Static(
    shape, prediction, float(sigma_data), None if clip_x0 is None or clip_x0 == 0 else float(clip_x0),
    guided, bool(self_condition), bool(trajectory), grid.integer, smp.uses_variance, **kw,
  )  # fmt: skip


def _grid_arrays(grid: Grid, dtype: str = "float32"):
  dtype = jnp.int32 if grid.integer else dtype
  return jnp.asarray(grid.ts, dtype), jnp.asarray(grid.prev, dtype), jnp.asarray(grid.clean), grid.max_orders


def sample(
  model_fn: Callable[..., jnp.ndarray],
  process,
  shape: tuple[int, ...],
  key: jax.Array,
  *,
  sampler: str | Sampler = "ddim",
  num_steps: int | None = None,
  ts=None,
  prediction: str = "eps",
  spacing: str | None = None,
  x_init: jnp.ndarray | None = None,
  clip_x0: float | None = None,
  guidance_scale: float | None = None,
  cond: Mapping[str, Any] | None = None,
  uncond: Mapping[str, Any] | None = None,
  guidance_rescale: float | None = None,
  guidance_interval: tuple[float, float] | None = None,
  guidance_schedule: Any = None,
  return_trajectory: bool = False,
  self_condition: bool = False,
  sigma_data: float | None = None,
  inpaint_mask: jnp.ndarray | None = None,
  inpaint_known: jnp.ndarray | None = None,
  repaint_resample: int = 1,
  repaint_jump: int = 1,
  paste_known: bool = True,
  **options: Any,
):
  """Draw samples of `shape` (batch first) by running the reverse process from noise to data.

  Args:
    model_fn: (x_t, t, **cond) -> output; wrap a Flax module with `bind(model.apply, params)`.
    process: a `jaxdiff.processes` process, or a `Schedule` (the discrete VP chain).
    sampler: a registered name (`jaxdiff.samplers.SAMPLERS`: ddpm, ddim, euler, euler_ancestral,
      heun, dpmpp_2m, dpmpp_3m, dpmpp_2m_sde, unipc, and any registered from outside) or a
      Sampler object. Its options go in `**options` (e.g. ddim's `eta`, ddpm's `variance`,
      euler/heun's `s_churn`, `s_tmin`, `s_tmax`, `s_noise`, heun's `frame`, unipc's `order`);
      an option the sampler does not take is an error naming the ones it does.
    num_steps: steps (default 50, or len(ts)).
    ts: the model times of the steps, descending, in the process's time (`jaxdiff.grids`); the
      last step lands on clean data. Default: the process's grid (`spacing` on chains).
    prediction: what the network outputs: "eps", "x0", "v", "flow" (eps - x0) or "edm" (F of
      EDM's preconditioning; the network then receives c_in x / alpha).
    spacing: "leading" | "trailing" | "linspace" for discrete chains (default leading).
    x_init: the state at the first grid time (default: process.prior_std(t_0) * N(0, 1) from `key`).
    clip_x0: clip predicted x0 to [-clip_x0, clip_x0] (None: no clipping).
    guidance_scale: classifier-free guidance; output = uncond + s (cond - uncond), from one
      batched call on [cond; uncond]. Needs `uncond` (e.g. {"y": null labels}).
    cond / uncond: keyword arguments of model_fn for the conditional / unconditional branch. An
      entry of `cond` that `uncond` leaves out is shared by both branches (e.g. `x_cond`);
      arrays of any rank, batch first (shape[0] entries), are stacked along the batch axis.
    guidance_rescale: phi in [0, 1] (Lin et al. 2024): the guided output g is rescaled to the
      conditional output's std per sample, g' = phi g std(cond)/std(g) + (1 - phi) g, in the
      model's output space (`prediction`: eps, v, x0, flow velocity or EDM's F), as diffusers'
      rescale_noise_cfg does. None: off (0 gives plain guidance at the cost of two reductions).
    guidance_interval: (lo, hi) in the process's time (Kynkaenniemi et al. 2024): guidance only at
      model evaluations with lo <= t <= hi, the plain conditional output elsewhere (a select,
      no branch: the batched call is the same).
    guidance_schedule: one scale per step ([num_steps], step 0 the noisiest), instead of
      guidance_scale. All three are arguments of the compiled program (new values do not
      recompile, and may be traced); unused, they add nothing to it.
    self_condition: feed the previous step's x0 prediction as `x_self_cond`.
    sigma_data: EDM's sigma_data for prediction="edm" (default: the process's, else 0.5).
    return_trajectory: also return {"x": x before each step and the final sample, "x0": x0
      predictions, "t": the model times}.
    inpaint_mask / inpaint_known: inpainting with any model (RePaint): `inpaint_mask`
      (broadcastable to `shape`, 1 = known) and the images `inpaint_known`. The known region is
      replaced by `inpaint_known` noised to each new level; with `paste_known` the result's known
      region equals `inpaint_known` exactly. `repaint_resample` / `repaint_jump`: RePaint's
      resampling (`repaint_schedule`), 1 = none.

  Returns:
    samples (float32, `shape`; float64 for a float64 `x_init` under jax_enable_x64: the grid, the
    model's times and output, the noise and the state then all follow it), or (samples, trajectory)
    with return_trajectory.
  """
  smp = make_sampler(sampler, **options)
  proc = as_process(process)
  shape = _check_shape(shape)
  if x_init is not None and tuple(jnp.shape(x_init)) != shape:
    raise SamplingError(f"x_init has shape {tuple(jnp.shape(x_init))}, expected {shape}.")
  grid = plan_grid(proc, smp, num_steps, ts, spacing)
  guided, cond, uncond, guide = _check_cond(
    guidance_scale, cond, uncond, shape, rescale=guidance_rescale, interval=guidance_interval,
    schedule=guidance_schedule, num_steps=len(grid.ts),
  )  # fmt: skip
  name = sampler if isinstance(sampler, str) else smp.name
  inpaint = inpaint_arrays(inpaint_mask, inpaint_known, shape, name)
  for label, v in (("repaint_resample", repaint_resample), ("repaint_jump", repaint_jump)):
    if isinstance(v, bool) or int(v) != v or v < 1:
      raise SamplingError(f"{label} must be an integer >= 1, got {v!r}.")
  if inpaint is None and (repaint_resample != 1 or repaint_jump != 1):
    raise SamplingError(
      "repaint_resample / repaint_jump apply to inpainting: pass inpaint_mask and inpaint_known."
    )
  if inpaint is not None and smp.split_final:
    raise SamplingError(f"inpainting does not run with {smp.name!r}.")
  st = _static(
    smp, proc, shape, prediction, sigma_data, clip_x0, guided, self_condition, return_trajectory, grid,
    repaint_resample=int(repaint_resample), repaint_jump=int(repaint_jump), paste_known=bool(paste_known),
    dtype=_run_dtype(x_init),
  )  # fmt: skip
  t_arr, prev, clean, orders = _grid_arrays(grid, st.dtype)
  return _SAMPLE(
    st, smp, _as_pytree_fn(model_fn), proc, t_arr, prev, clean, orders, key, x_init, cond, uncond, guide, inpaint
  )  # fmt: skip
