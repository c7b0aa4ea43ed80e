"""Data sets that ship with the installed packages (no download): scikit-learn's digits, and the
stateless batch stream over any fixed in-memory set.

Digits: 1797 grayscale 8x8 images with values 0..16 and labels 0-9 (`sklearn.datasets.load_digits`,
read from the CSV bundled with scikit-learn), scaled to [-1, 1] as x / 8 - 1. A fixed,
seed-independent stratified split holds out 20% of every class as "test" (359 images) and keeps
the other 1438 as "train", so held-out digits exist for evaluation whatever config.seed is.

Order: the stream is the concatenation of epochs; epoch e is a permutation drawn from
(config.seed, e) alone, and global batch k is elements [k*B, (k+1)*B) of that stream (a batch
may span two epochs). Batch k is therefore a pure function of (seed, k): resuming at step k
costs one permutation, and process p of P takes elements [p*b, (p+1)*b) of each global batch.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator

import numpy as np
from sklearn.datasets import load_digits  # bundled with scikit-learn: no download

from jaxdiff.data import base
from jaxdiff.errors import ConfigError, DataError

DIGITS_SHAPE = (8, 8, 1)
DIGITS_NUM_CLASSES = 10
DIGITS_SPLITS = ("train", "test", "all")
DIGITS_TEST_FRACTION = 0.2
_DIGITS_SPLIT_SEED = 20_240_427  # fixed: the held-out digits never depend on config.seed


@functools.lru_cache(maxsize=1)
def _digits_all() -> tuple[np.ndarray, np.ndarray]:
  """All 1797 digits in scikit-learn's order: x float32 [N, 8, 8, 1] in [-1, 1], labels int32."""
  bunch = load_digits()
  x = (np.asarray(bunch.images, dtype=np.float32) / 8.0 - 1.0)[..., None]
  y = np.asarray(bunch.target, dtype=np.int32)
  x.flags.writeable = False
  y.flags.writeable = False
  return x, y


@functools.lru_cache(maxsize=1)
def digits_test_mask() -> np.ndarray:
  """Boolean [1797]: True for the held-out "test" digits (20% of each class, fixed seed)."""
  _, y = _digits_all()
  rng = np.random.default_rng(_DIGITS_SPLIT_SEED)
  mask = np.zeros(len(y), dtype=bool)
  for c in range(DIGITS_NUM_CLASSES):
    idx = np.flatnonzero(y == c)
    n_test = int(round(DIGITS_TEST_FRACTION * len(idx)))
    mask[rng.permutation(idx)[:n_test]] = True
  mask.flags.writeable = False
  return mask


def load_digits_split(split: str = "train") -> tuple[np.ndarray, np.ndarray]:
  """Digits of one split ("train" 1438 | "test" 359 | "all" 1797), in scikit-learn's order."""
  if split not in DIGITS_SPLITS:
    raise ConfigError(
      f"config.data.split={split!r} is not a digits split; use one of "
      f"{DIGITS_SPLITS} (e.g. --config.data.split=train)"
    )
  x, y = _digits_all()
  if split == "all":
    return x.copy(), y.copy()
  keep = digits_test_mask() if split == "test" else ~digits_test_mask()
  return x[keep], y[keep]


def validate_digits(data_config, split: str) -> int:
  """Checks the image fields of config.data (complete: `base.complete_config`) for digits; returns
  the number of label classes used (0 or 10)."""
  image_size = data_config.image_size
  channels = data_config.channels
  num_classes = data_config.num_classes
  if image_size != 8:
    raise ConfigError(
      f"config.data.image_size={image_size}, but digits are 8x8 images (no "
      "resizing); set --config.data.image_size=8"
    )
  if channels != 1:
    raise ConfigError(
      f"config.data.channels={channels}, but digits are grayscale; set --config.data.channels=1"
    )
  if num_classes not in (0, DIGITS_NUM_CLASSES):
    raise ConfigError(
      f"config.data.num_classes={num_classes}, but digits have 10 classes; set "
      "--config.data.num_classes=10 (class labels) or 0 (unconditional)"
    )
  if data_config.random_flip:
    raise ConfigError(
      "config.data.random_flip=True would mirror the digits (a mirrored 3 is "
      "not a 3); set --config.data.random_flip=False"
    )
  base.check_no_image_options("digits", data_config, ["center_crop"])
  if split not in DIGITS_SPLITS:
    raise ConfigError(
      f"config.data.split={split!r} is not a digits split; use one of "
      f"{DIGITS_SPLITS} (e.g. --config.data.split=train)"
    )
  return int(num_classes)


class _EpochOrder:
  """Per-epoch permutations of n examples drawn from (seed, epoch); keeps the last few."""

  def __init__(self, n: int, seed: int):
    self.n, self.seed = n, seed
    self._cache: dict[int, np.ndarray] = {}

  def __call__(self, epoch: int) -> np.ndarray:
    perm = self._cache.get(epoch)
    if perm is None:
      if len(self._cache) >= 4:
        self._cache.pop(min(self._cache))
      perm = base.rng_for(self.seed, base.TAG_EPOCH_ORDER, epoch).permutation(self.n)
      self._cache[epoch] = perm
    return perm


def fixed_set_indices(
  n: int, seed: int, global_batch: int, local_batch: int, process_index: int, start_step: int = 0
) -> Iterator[np.ndarray]:
  """Yields, for steps start_step, start_step + 1, ..., this process's example indices.

  Element g of the global stream is example perm_{g // n}[g % n]; process p takes elements
  step*B + p*b ... step*B + (p+1)*b - 1. Everything is a function of (seed, step).
  """
  if n < 1:
    raise DataError("cannot stream an empty data set")
  order = _EpochOrder(n, seed)
  offsets = process_index * local_batch + np.arange(local_batch, dtype=np.int64)
  step = int(start_step)
  while True:
    g = step * int(global_batch) + offsets
    epochs, pos = np.divmod(g, n)
    idx = np.empty(local_batch, dtype=np.int64)
    for e in np.unique(epochs):
      sel = epochs == e
      idx[sel] = order(int(e))[pos[sel]]
    yield idx
    step += 1


def fixed_set_stream(
  x: np.ndarray,
  labels: np.ndarray | None,
  seed: int,
  global_batch: int,
  local_batch: int,
  process_index: int,
  start_step: int = 0,
) -> Iterator[dict[str, np.ndarray]]:
  """Endless per-process batches {"x", ["label"]} over a fixed set (see fixed_set_indices)."""
  for idx in fixed_set_indices(len(x), seed, global_batch, local_batch, process_index, start_step):
    batch = {"x": x[idx]}
    if labels is not None:
      batch["label"] = labels[idx]
    yield batch
