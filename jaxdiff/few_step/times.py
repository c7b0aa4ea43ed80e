"""The (r, t) pairs one-step models train on: MeanFlow's two logit-normal times, shortcut step sizes.

Times are the rectified flow's (t = 1 is noise); `r <= t` is the time a step lands on.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["meanflow_times", "shortcut_times"]


def meanflow_times(
  key: jax.Array, batch: int, *, ratio: float = 0.25, logit_mean: float = -0.4, logit_std: float = 1.0
) -> tuple[jnp.ndarray, jnp.ndarray]:
  """(t, r) as MeanFlow draws them: two logit-normal times, t the larger, r the smaller, and r = t
  on a fraction 1 - `ratio` of the batch (there the loss is plain flow matching)."""
  k_a, k_b, k_keep = jax.random.split(key, 3)
  a = jax.nn.sigmoid(logit_mean + logit_std * jax.random.normal(k_a, (batch,), jnp.float32))
  b = jax.nn.sigmoid(logit_mean + logit_std * jax.random.normal(k_b, (batch,), jnp.float32))
  t, r = jnp.maximum(a, b), jnp.minimum(a, b)
  two = jax.random.uniform(k_keep, (batch,)) < ratio
  return t, jnp.where(two, r, t)


def shortcut_times(key: jax.Array, batch: int, *, max_log2: int = 7) -> tuple[jnp.ndarray, jnp.ndarray]:
  """(t, d) for a shortcut model's self-consistency targets: a step size d = 2^-k, k uniform in
  1..max_log2 (the target is two steps of d), and t uniform on the grid of 2d that fits in [2d, 1]."""
  k_d, k_t = jax.random.split(key)
  k = jax.random.randint(k_d, (batch,), 1, max_log2 + 1)
  d = jnp.exp2(-k.astype(jnp.float32))
  n = jnp.round(1.0 / (2.0 * d))  # steps of 2d in [0, 1]
  i = jnp.floor(jax.random.uniform(k_t, (batch,)) * n) + 1.0  # 1..n
  return i * 2.0 * d, d
