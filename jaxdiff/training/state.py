"""The train state (Flax TrainState + EMA parameters) and the Optax optimizer built from the config."""

from __future__ import annotations

from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax.training import train_state

from jaxdiff.models import dummy_inputs

__all__ = [
  "TrainState",
  "learning_rate_schedule",
  "create_optimizer",
  "create_train_state",
  "ema_decay",
  "ema_update",
]


class TrainState(train_state.TrainState):
  """Flax's TrainState plus `ema_params`, the exponential moving average used for sampling."""

  ema_params: Any = None


def learning_rate_schedule(config: ml_collections.ConfigDict) -> optax.Schedule:
  """Linear warm-up to optim.learning_rate, then constant or cosine decay to 0 at train.num_steps."""
  o = config.optim
  warm = max(int(o.warmup_steps), 0)
  if o.schedule == "constant":
    if warm == 0:
      return optax.constant_schedule(o.learning_rate)
    return optax.join_schedules(
      [optax.linear_schedule(0.0, o.learning_rate, warm), optax.constant_schedule(o.learning_rate)], [warm]
    )
  if o.schedule == "cosine":
    decay = max(int(config.train.num_steps) - warm, 1)
    return optax.warmup_cosine_decay_schedule(
      0.0, o.learning_rate, max(warm, 1) if warm else 1, warm + decay, end_value=0.0
    )
  raise ValueError(f"config.optim.schedule must be 'constant' or 'cosine', got {o.schedule!r}.")


def create_optimizer(
  config: ml_collections.ConfigDict,
) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """Global-norm clipping -> Adam/AdamW with the schedule; optax.MultiSteps for accumulation."""
  o = config.optim
  lr = learning_rate_schedule(config)
  if o.optimizer == "adam":
    opt = optax.adam(lr, b1=o.b1, b2=o.b2, eps=o.eps)
  elif o.optimizer == "adamw":
    opt = optax.adamw(lr, b1=o.b1, b2=o.b2, eps=o.eps, weight_decay=o.weight_decay)
  else:
    raise ValueError(f"config.optim.optimizer must be 'adam' or 'adamw', got {o.optimizer!r}.")
  parts = [optax.clip_by_global_norm(o.grad_clip)] if o.grad_clip and o.grad_clip > 0 else []
  tx = optax.chain(*parts, opt)
  k = int(config.train.grad_accum_steps)
  if k > 1:
    tx = optax.MultiSteps(tx, every_k_schedule=k)
  return tx, lr


def create_train_state(
  config: ml_collections.ConfigDict, model: flax.linen.Module, key: jax.Array
) -> TrainState:
  """Initialise parameters from the config's example inputs; EMA starts equal to them."""
  x, t, kwargs = dummy_inputs(config, batch_size=1)
  variables = model.init({"params": key, "dropout": key}, x, t, **kwargs)
  params = variables["params"]
  tx, _ = create_optimizer(config)
  return TrainState.create(
    apply_fn=model.apply, params=params, tx=tx, ema_params=jax.tree_util.tree_map(jnp.copy, params)
  )


def ema_decay(step: jnp.ndarray, decay: float, warmup: bool) -> jnp.ndarray:
  """decay, or min(decay, (1 + step) / (10 + step)) with warm-up (early averages forget the init)."""
  if not warmup:
    return jnp.asarray(decay, jnp.float32)
  step = jnp.asarray(step, jnp.float32)
  return jnp.minimum(decay, (1.0 + step) / (10.0 + step))


def ema_update(ema: Any, params: Any, decay: jnp.ndarray) -> Any:
  """ema <- decay * ema + (1 - decay) * params, leaf by leaf."""
  return jax.tree_util.tree_map(lambda e, p: decay * e + (1.0 - decay) * p.astype(e.dtype), ema, params)
