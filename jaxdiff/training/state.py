"""The train state (Flax TrainState + EMA parameters) and the Optax optimizer built from the config."""

from __future__ import annotations

from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax.training import train_state

from jaxdiff import parallel
from jaxdiff.errors import ConfigError
from jaxdiff.models import dummy_inputs

__all__ = [
  "TrainState",
  "learning_rate_schedule",
  "create_optimizer",
  "create_train_state",
  "train_state_shardings",
  "state_bytes_per_device",
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
  raise ConfigError(f"config.optim.schedule must be 'constant' or 'cosine', got {o.schedule!r}.")


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
    raise ConfigError(f"config.optim.optimizer must be 'adam' or 'adamw', got {o.optimizer!r}.")
  parts = [optax.clip_by_global_norm(o.grad_clip)] if o.grad_clip and o.grad_clip > 0 else []
  tx = optax.chain(*parts, opt)
  k = int(config.train.grad_accum_steps)
  if k > 1:
    tx = optax.MultiSteps(tx, every_k_schedule=k)
  return tx, lr


def create_train_state(
  config: ml_collections.ConfigDict,
  model: flax.linen.Module,
  key: jax.Array,
  tx: optax.GradientTransformation | None = None,
) -> TrainState:
  """Initialise parameters from the config's example inputs; EMA starts equal to them.

  `tx`: the optimizer (default `create_optimizer(config)`); pass one object to build states
  whose pytree structures are equal (a TrainState's optimizer is static pytree data, and two
  builds of the same chain are different objects), as `jax.jit`'s shardings need."""
  x, t, kwargs = dummy_inputs(config, batch_size=1)
  variables = model.init({"params": key, "dropout": key}, x, t, **kwargs)
  params = variables["params"]
  if tx is None:
    tx, _ = create_optimizer(config)
  return TrainState.create(
    apply_fn=model.apply, params=params, tx=tx, ema_params=jax.tree_util.tree_map(jnp.copy, params)
  )


def train_state_shardings(
  config: ml_collections.ConfigDict,
  model: flax.linen.Module,
  mesh: jax.sharding.Mesh,
  tx: optax.GradientTransformation | None = None,
) -> TrainState:
  """The TrainState's layout on `mesh`: a TrainState (optimizer `tx`) whose leaves are NamedShardings.

  Parameters, optimizer state (Adam's moments, MultiSteps' accumulators) and EMA follow
  `parallel.fsdp_spec` along the mesh's "fsdp" axis (replicated when it has size 1); scalars such
  as the step counter are replicated. Shapes come from `jax.eval_shape`: nothing is allocated."""
  abstract = jax.eval_shape(lambda: create_train_state(config, model, jax.random.key(0), tx=tx))
  return parallel.fsdp_sharding(abstract, mesh, int(config.parallel.fsdp_min_size))


def state_bytes_per_device(state: Any, shardings: Any = None) -> int:
  """Bytes of parameters + optimizer state + EMA one device holds (from the shardings)."""
  parts = (state.params, state.opt_state, state.ema_params)
  if shardings is None:
    return parallel.bytes_per_device(parts)
  return parallel.bytes_per_device(parts, (shardings.params, shardings.opt_state, shardings.ema_params))


def ema_decay(step: jnp.ndarray, decay: float, warmup: bool) -> jnp.ndarray:
  """decay, or min(decay, (1 + step) / (10 + step)) with warm-up (early averages forget the init)."""
  if not warmup:
    return jnp.asarray(decay, jnp.float32)
  step = jnp.asarray(step, jnp.float32)
  return jnp.minimum(decay, (1.0 + step) / (10.0 + step))


def ema_update(ema: Any, params: Any, decay: jnp.ndarray) -> Any:
  """ema <- decay * ema + (1 - decay) * params, leaf by leaf."""
  return jax.tree_util.tree_map(lambda e, p: decay * e + (1.0 - decay) * p.astype(e.dtype), ema, params)
