"""Where a training run's wall time goes, per logging window: input, the compiled step, checkpoints,
metrics and sample grids.

The host times only what blocks it. Input counts as waiting only while the device has nothing queued
(the previous step's outputs already ready, a non-blocking `is_ready` query): input prepared while a
step still runs is overlapped and costs nothing. Blocking on a step's outputs happens only where the
loop reads them anyway (metrics at a window boundary, a checkpoint, a sample grid) and is counted as
step time, so checkpoint / metrics / samples hold only their own work. The step's share is the rest of
the window's wall time (dispatch, the device computing, overlapped input). Shares sum to 1.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

import jax

__all__ = ["WallBreakdown", "CATEGORIES", "device_idle"]

# the measured categories; "step" is the window's remainder
CATEGORIES = ("input", "step", "checkpoint", "metrics", "samples")
_MEASURED = ("input", "checkpoint", "metrics", "samples")
# the short names of the progress-bar line
_SHORT = {"input": "in", "step": "step", "checkpoint": "ckpt", "metrics": "log", "samples": "grid"}


def device_idle(outputs: Any) -> bool:
  """Whether every array of `outputs` (the last dispatched step's) is computed: a non-blocking query."""
  return all(x.is_ready() for x in jax.tree.leaves(outputs) if isinstance(x, jax.Array))


class WallBreakdown:
  """Seconds per category since `restart`; `shares` turns them into fractions of the window's wall time."""

  def __init__(self):
    self.restart()

  def restart(self) -> None:
    self.t0 = time.perf_counter()
    self.spent = dict.fromkeys(_MEASURED, 0.0)

  @contextlib.contextmanager
  def timing(self, category: str) -> Iterator[None]:
    """Count the time inside the block as `category` (one of input, checkpoint, metrics, samples)."""
    t = time.perf_counter()
    try:
      yield
    finally:
      self.spent[category] += time.perf_counter() - t

  def wait_input(self, last_outputs: Any, fetch):
    """`fetch()`'s result; its time counts as input when the device had finished `last_outputs`
    (nothing queued: the step waits for the batch), else it overlapped a running step."""
    idle = last_outputs is None or device_idle(last_outputs)
    t = time.perf_counter()
    batch = fetch()
    if idle:
      self.spent["input"] += time.perf_counter() - t
    return batch

  def shares(self, now: float | None = None) -> dict[str, float]:
    """{'time/<category>_share': fraction of the wall time since restart}; step takes the remainder."""
    total = max((time.perf_counter() if now is None else now) - self.t0, 1e-12)
    out = {c: min(self.spent[c] / total, 1.0) for c in _MEASURED}
    out["step"] = max(1.0 - sum(out.values()), 0.0)
    return {f"time/{c}_share": out[c] for c in CATEGORIES}


def short_line(scalars: dict[str, float]) -> str:
  """'step 97% in 1% ckpt 2% log 0% grid 0%': the shares of a window, for the progress-bar line."""
  return " ".join(
    f"{_SHORT[c]} {100 * scalars[f'time/{c}_share']:.0f}%" for c in CATEGORIES if f"time/{c}_share" in scalars
  )
