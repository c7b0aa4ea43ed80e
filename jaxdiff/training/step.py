"""The pure train step: loss, gradients, the Optax update and the EMA update in one function.

`make_train_step` returns `step(state, batch, key) -> (state, metrics)`; the loop jits it with
the state donated and the batch split over the data mesh. Per-step randomness is
`fold_in(key, state.step)`, split into the loss's, the dropout's and the label dropout's streams,
so a resumed run draws exactly what the uninterrupted run drew. What the model takes besides
(x_t, t) comes from `jaxdiff.conditioning.Conditioning.train_kwargs`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax

try:  # jax >= 0.7; without it the unrolled steps agree to float rounding instead of bit for bit
  from jax.experimental.layout import Layout as _Layout
  from jax.experimental.layout import with_layout_constraint as _with_layout_constraint
except ImportError:  # pragma: no cover
  _Layout = _with_layout_constraint = None

from jaxdiff import diffusion
from jaxdiff.conditioning import Conditioning
from jaxdiff.errors import ConfigError
from jaxdiff.few_step import config as few_step_config
from jaxdiff.samplers.few_step import ode_step
from jaxdiff.training.state import TrainState, ema_decay, ema_update, learning_rate_schedule

__all__ = ["make_train_step", "make_multi_step", "multi_step_impl", "MULTI_STEP_IMPLS", "context_dropout"]


def context_dropout(config) -> float:
  """config.train.context_dropout, where a negative value (the default) means label_dropout."""
  return Conditioning.from_config(config).context_dropout


def make_train_step(
  config: ml_collections.ConfigDict, model: Any, schedule: Any, teacher: Any = None
) -> Callable:
  """step(state, batch, key) -> (new_state, metrics); batch = {"x": ..., "label": ...}.

  `schedule` is the run's process: a Schedule (the discrete chain) or a `jaxdiff.processes` process.
  `teacher`: (config, model, process, EMA params) of a frozen run whose one ODE step is the target
  of consistency distillation (config.distill.teacher)."""
  d = config.diffusion
  lr_fn = learning_rate_schedule(config)
  skip_nonfinite = config.train.nan_policy == "skip"
  accumulate = int(config.train.grad_accum_steps) > 1
  conditioning = Conditioning.from_config(config)

  def step(state: TrainState, batch: dict, key: jax.Array):
    k_loss, k_drop, k_label = jax.random.split(jax.random.fold_in(key, state.step), 3)
    x0 = batch["x"].astype(jnp.float32)
    cond = conditioning.train_kwargs(batch, k_label)
    # ---- one- and two-step models (jaxdiff.few_step): the method's loss arguments ----
    uncond = conditioning.sample_kwargs(x0.shape[0], batch.get("label"))[1] if conditioning.labels else None
    few = few_step_config.loss_arguments(config, state.step, uncond)
    if teacher is not None:
      few["few_step_options"]["teacher_step"] = _teacher_step(config, teacher, cond)

    def loss_fn(params):
      def model_fn(x_t, t, **kw):
        return model.apply({"params": params}, x_t, t, train=True, rngs={"dropout": k_drop}, **kw)

      return diffusion.loss(
        model_fn,
        schedule,
        x0,
        k_loss,
        prediction=d.prediction,
        loss_type=d.loss_type,
        weighting=d.weighting,
        min_snr_gamma=d.min_snr_gamma,
        p2_gamma=d.p2_gamma,
        p2_k=d.p2_k,
        offset_noise=d.offset_noise,
        self_condition=bool(config.model.self_condition),
        cond=cond,
        time_sampling=d.time_sampling or None,
        sigma_data=float(d.sigma_data),
        **few,
      )

    (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    new_state = state.apply_gradients(grads=grads)
    decay = ema_decay(state.step, config.ema.decay, config.ema.warmup)
    new_ema = ema_update(state.ema_params, new_state.params, decay)
    if accumulate:  # MultiSteps applies the update every k-th call only: EMA follows the real updates
      applied = new_state.opt_state.mini_step == 0
      new_ema = jax.tree_util.tree_map(lambda n, o: jnp.where(applied, n, o), new_ema, state.ema_params)
    new_state = new_state.replace(ema_params=new_ema)
    finite = jnp.isfinite(loss)
    if skip_nonfinite:  # keep the old state where the loss was NaN/Inf (the step counter still moves)
      keep = lambda n, o: jnp.where(finite, n, o)
      new_state = new_state.replace(
        params=jax.tree_util.tree_map(keep, new_state.params, state.params),
        opt_state=jax.tree_util.tree_map(keep, new_state.opt_state, state.opt_state),
        ema_params=jax.tree_util.tree_map(keep, new_state.ema_params, state.ema_params),
      )
    metrics = dict(metrics)
    metrics["grad_norm"] = optax.global_norm(grads)
    metrics["learning_rate"] = lr_fn(state.step // max(int(config.train.grad_accum_steps), 1))
    metrics["ema_decay"] = decay
    metrics["nonfinite"] = (~finite).astype(jnp.int32)
    return new_state, metrics

  return step


def _teacher_step(config, teacher, cond) -> Callable:
  """x_t at t -> x at r by one step of config.distill.sampler with the frozen teacher."""
  t_config, t_model, t_process, t_params = teacher
  t_params = jax.lax.stop_gradient(t_params)

  def teacher_fn(x, t, **kw):
    return t_model.apply({"params": t_params}, x, t, **kw)

  def step(x_t, t, r):
    return ode_step(
      teacher_fn, t_process, x_t, t, r, sampler=config.distill.sampler,
      prediction=t_config.diffusion.prediction, sigma_data=float(t_config.diffusion.sigma_data), cond=cond,
    )  # fmt: skip

  return step


MULTI_STEP_IMPLS = ("auto", "unroll", "scan")


def _row_major(a):
  """`a` constrained to the default (row-major) layout where JAX can say so."""
  if _with_layout_constraint is None or getattr(a, "ndim", 0) < 2:
    return a
  return _with_layout_constraint(a, _Layout(tuple(range(a.ndim))))


def multi_step_impl(impl: str = "auto", platform: str | None = None) -> str:
  """How `make_multi_step` loops: "auto" is "unroll" on XLA:CPU, where convolution gradients
  inside a `lax.scan` body run many times slower than at top level (benchmarks/bench_scan_conv.py),
  and "scan" on GPU/TPU, where the loop keeps the program (and its compile time) the size of one
  step. Figures: benchmarks/BENCHMARKS.md, "Steps per dispatch"."""
  if impl not in MULTI_STEP_IMPLS:
    raise ConfigError(f"multi-step implementation must be one of {MULTI_STEP_IMPLS}, got {impl!r}")
  if impl != "auto":
    return impl
  return "unroll" if (platform or jax.default_backend()) == "cpu" else "scan"


def make_multi_step(step: Callable, num: int, impl: str = "auto") -> Callable:
  """`num` train steps in one call: batches carry a leading axis of size num (score_sde's knob);
  metrics come back with that leading axis too.

  impl: "scan" (one `lax.scan`: the program is one step's size; the result agrees with `num`
  calls of `step` up to float rounding), "unroll" (the steps written out one after the other,
  an optimisation barrier and the row-major layout on each step's state so that XLA compiles each
  step as it compiles a single step: bit-identical to `num` calls of `step` on XLA:CPU, tested),
  or "auto" (`multi_step_impl`: unroll on CPU, scan elsewhere)."""
  if num <= 1:
    return step
  impl = multi_step_impl(impl)

  if impl == "scan":

    def multi(state, batches, key):
      def body(s, b):
        return step(s, b, key)

      return jax.lax.scan(body, state, batches)  # per-step metrics, leading axis num

    return multi

  def unrolled(state, batches, key):
    per_step = []
    for i in range(num):
      batch = jax.tree_util.tree_map(lambda b: b[i], batches)
      # The barrier keeps XLA from fusing across steps; the layout constraint gives each state
      # array the row-major layout it has between two single-step calls (XLA would otherwise
      # pick conv-friendly layouts for the params passed on, and accumulate in another order).
      state, metrics = jax.lax.optimization_barrier(step(state, batch, key))
      if i < num - 1:  # (the last state is the program's output: row-major already)
        state = jax.tree_util.tree_map(_row_major, state)
      per_step.append(metrics)
    return state, jax.tree_util.tree_map(lambda *m: jnp.stack(m), *per_step)

  return unrolled
