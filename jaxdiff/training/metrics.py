"""The training loop's metrics: the window of per-step metrics still on the device (read back every
log_every steps, the only metrics sync), its means, throughput and wall-time shares, the
non-finite-loss policy, and the writers (metrics.jsonl, TensorBoard)."""

from __future__ import annotations

import json
import logging
import math
import os
import time

import jax
import numpy as np
from PIL import Image

from jaxdiff import fileio, parallel
from jaxdiff.errors import NonFiniteLossError
from jaxdiff.training.breakdown import WallBreakdown
from jaxdiff.training.checkpointer import Checkpointer

__all__ = ["MetricWriter", "MetricsWindow"]

log = logging.getLogger("jaxdiff.train")

# URLs tensorboardX writes itself (elsewhere on an object store, metrics.jsonl is the only record)
TENSORBOARD_URLS = ("gs://", "s3://")


class MetricWriter:
  """Metrics as JSON lines (workdir/metrics.jsonl) and TensorBoard events (workdir/tensorboard)."""

  def __init__(self, workdir: str, enabled: bool):
    self.enabled = enabled
    self._tb = None
    if enabled:
      self._path = os.path.join(workdir, "metrics.jsonl")
      if fileio.is_url(workdir) and not workdir.startswith(TENSORBOARD_URLS):
        why = f"tensorboardX writes local paths and {', '.join(TENSORBOARD_URLS)} only"
        log.warning("TensorBoard writer unavailable (%s); metrics go to metrics.jsonl only.", why)
        return
      try:
        from tensorboardX import SummaryWriter

        self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))
      except Exception as e:  # TensorBoard is a convenience; the JSON lines are the record
        log.warning("TensorBoard writer unavailable (%s); metrics go to metrics.jsonl only.", e)

  def write(self, step: int, scalars: dict[str, float]) -> None:
    if not self.enabled:
      return
    fileio.append_text(
      self._path, json.dumps({"step": step, **{k: float(v) for k, v in scalars.items()}}) + "\n"
    )
    if self._tb is not None:
      for k, v in scalars.items():
        self._tb.add_scalar(k, float(v), step)

  def write_image(self, step: int, tag: str, path: str) -> None:
    if self._tb is None:
      return
    try:
      img = np.asarray(Image.open(fileio.readable(path)).convert("RGB"))
      self._tb.add_image(tag, img, step, dataformats="HWC")
    except Exception:
      pass

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()


class MetricsWindow:
  """The per-step metrics of the steps since the last read-back, still on the device, and the
  throughput of the window and its wall-time breakdown (`clock`). `flush` is the only device->host
  sync of the metrics."""

  def __init__(
    self,
    global_batch: int,
    nan_policy: str,
    ckpt: Checkpointer,
    last_saved: int | None,
    max_skipped: int | None = None,
  ):
    self.global_batch = global_batch
    self.stop_on_nonfinite = nan_policy == "stop"
    self.max_skipped = max_skipped  # nan_policy "skip": stop once more updates than this were skipped
    self.skipped = 0  # updates skipped for a non-finite loss since this run started or resumed
    self.ckpt = ckpt
    self.last_saved = last_saved  # the last good checkpoint, named when the loss goes non-finite
    self.pending: list[tuple[int, dict]] = []
    self.rows: list[tuple[int, dict[str, float]]] = []  # this window's steps read back already
    self.clock = WallBreakdown()
    self.restart()

  def restart(self) -> None:
    self.clock.restart()
    self.t0, self.steps, self.rows = self.clock.t0, 0, []

  def wait_for_steps(self) -> None:
    """Block until the pending steps are computed (time the breakdown counts as step time)."""
    jax.block_until_ready([m for _, m in self.pending])

  def add(self, first_step: int, metrics: dict, num_steps: int) -> None:
    self.pending.append((first_step, metrics))
    self.steps += num_steps

  def _rows(self) -> list[tuple[int, dict[str, float]]]:
    fetched = parallel.fetch([m for _, m in self.pending])
    rows = []
    for (s0, _), m in zip(self.pending, fetched):
      for j in range(np.atleast_1d(m["loss"]).shape[0]):  # steps_per_dispatch steps per entry
        rows.append((s0 + j, {k: float(np.atleast_1d(v)[j]) for k, v in m.items()}))
    self.pending = []
    return rows

  def flush(self) -> dict[str, float]:
    """Means of the pending metrics ({} when none); NonFiniteLossError under nan_policy 'stop'."""
    if not self.pending:
      return {}
    rows = self._rows()
    if self.stop_on_nonfinite:
      for s, row in rows:
        if not math.isfinite(row["loss"]):
          raise NonFiniteLossError(
            f"The loss became {row['loss']} at step {s + 1}. Training stopped; {self._last_checkpoint()}. "
            "Lower config.optim.learning_rate, check the data, or set --config.train.nan_policy=skip to "
            "skip such updates."
          )
    elif self.max_skipped is not None:
      self._count_skipped(rows)
    self.rows += rows
    return _means(rows)

  def _count_skipped(self, rows: list[tuple[int, dict[str, float]]]) -> None:
    """NonFiniteLossError at the step where the skipped updates exceed max_skipped: a run that skips
    that many is diverging, and would otherwise report success with a broken model."""
    for s, row in rows:
      if row.get("nonfinite", 0.0) > 0:
        self.skipped += 1
        if self.skipped > self.max_skipped:
          raise NonFiniteLossError(
            f"{self.skipped} updates were skipped for a non-finite loss by step {s + 1} (this one included), "
            f"more than config.train.max_skipped_steps={self.max_skipped}: training is diverging. Stopped; "
            f"{self._last_checkpoint()}. Lower config.optim.learning_rate (or set optim.grad_clip), "
            "or raise --config.train.max_skipped_steps if rare bad batches are expected."
          )

  def _last_checkpoint(self) -> str:
    """What the stop message says of the newest checkpoint: 'good' only for a verified one."""
    if self.last_saved is None:
      return f"no checkpoint in {self.ckpt.directory} yet"
    if self.last_saved in self.ckpt.unverified:
      return (
        f"checkpoint {self.last_saved} in {self.ckpt.directory} is kept, but it has no checksums (unverified): "
        "damaged parameters give a non-finite loss too, so check it (move it aside to resume from an older "
        "step) before changing the learning rate"
      )
    return f"the last good checkpoint (step {self.last_saved}) in {self.ckpt.directory} is intact"

  def summary(self) -> dict[str, float]:
    """flush() plus the window's steps and images per second and the shares of its wall time
    ('time/<input|step|checkpoint|metrics|samples>_share'); starts a new window."""
    self.wait_for_steps()
    with self.clock.timing("metrics"):
      self.flush()
      scalars = _means(self.rows)
    now = time.perf_counter()
    dt = now - self.t0
    scalars["steps_per_sec"] = self.steps / dt
    scalars["images_per_sec"] = self.steps * self.global_batch / dt
    scalars.update(self.clock.shares(now))
    self.restart()
    return scalars


def _means(rows: list[tuple[int, dict[str, float]]]) -> dict[str, float]:
  """The metrics' means over `rows` ({} when none); nonfinite is the count of skipped updates."""
  if not rows:
    return {}
  mean = {k: float(np.mean([r[k] for _, r in rows])) for k in rows[-1][1]}
  mean["nonfinite"] = float(sum(r["nonfinite"] for _, r in rows))
  return mean
