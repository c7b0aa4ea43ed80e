"""The frozen teacher of consistency distillation (config.distill.teacher): a trained run's EMA weights."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from jaxdiff.errors import ConfigError, SamplingError
from jaxdiff.training.restore import restore_model

__all__ = ["distill_teacher"]

_SAME = ("process", "flow_shift", "sigma_data", "num_timesteps", "schedule")


def distill_teacher(config: Any) -> tuple[Any, Any, Any, Any] | None:
  """(config, model, process, EMA params) of config.distill.teacher, or None without one.

  The teacher must share the student's process (the pairs (t, r) are its times) and image shape."""
  workdir = config.distill.teacher
  if not workdir:
    return None
  try:
    t_config, model, process, params, _ = restore_model(workdir, "ema")
  except SamplingError as e:
    raise ConfigError(f"config.distill.teacher={workdir!r}: {e}") from None
  for field in _SAME:
    mine, theirs = config.diffusion.get(field), t_config.diffusion.get(field)
    if mine != theirs:
      raise ConfigError(
        f"config.distill.teacher={workdir!r} was trained with diffusion.{field}={theirs!r}, this run has "
        f"{mine!r}: distil on the teacher's process (set config.diffusion.{field}={theirs!r})."
      )
  for field in ("image_size", "channels"):
    if config.data[field] != t_config.data[field]:
      raise ConfigError(
        f"config.distill.teacher={workdir!r} has data.{field}={t_config.data[field]!r}, this run "
        f"{config.data[field]!r}; distil on the teacher's data."
      )
  return t_config, model, process, jax.tree_util.tree_map(jnp.asarray, params)
