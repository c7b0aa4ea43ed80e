"""2-D toy distributions for quick diffusion experiments (config.data.name = "toy2d/<name>").

All sets are scaled to lie (almost entirely) inside [-1, 1]^2, the same range as images, so the
default x0 clipping of the samplers never cuts them:

  s_curve      scikit-learn make_s_curve(noise=0.1), the x and z coordinates (as in the
               S-curve tutorial), divided by 2.5: x in [-0.4, 0.4], z in [-0.8, 0.8]
  swiss_roll   scikit-learn make_swiss_roll(noise=0.5), x and z, divided by 16 (radius <= 0.88)
  moons        scikit-learn make_moons(noise=0.05), shifted by (-0.5, -0.25), divided by 1.75;
               labels 0 (upper moon) / 1 (lower moon)
  8gaussians   8 Gaussians with std 0.05 centred on the circle of radius 0.8 at angles
               2*pi*k/8; label k
  checkerboard uniform on the 8 "black" cells (i + j even) of a 4x4 board on [-1, 1]^2

Streams (config.data.toy2d_num_points): 0 (default) gives an endless stream of fresh points,
global batch k drawn from (config.seed, k) alone, so resuming at step k is free; N > 0 gives a
fixed set of N points drawn from config.seed, visited epoch by epoch in a per-epoch order from
(config.seed, epoch) like the digits (see jaxdiff.data.embedded).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

import jax
import numpy as np
from sklearn.datasets import make_moons, make_s_curve, make_swiss_roll

from jaxdiff.data import base
from jaxdiff.errors import ConfigError, DataError

Draw = Callable[[np.random.Generator, int], tuple[np.ndarray, np.ndarray | None]]

S_CURVE_SCALE = 2.5
SWISS_ROLL_SCALE = 16.0
MOONS_SHIFT = (0.5, 0.25)
MOONS_SCALE = 1.75
GAUSSIANS_RADIUS = 0.8
GAUSSIANS_STD = 0.05


def _sk_seed(rng: np.random.Generator) -> int:
  return int(rng.integers(0, 2**31 - 1))


def _s_curve(rng: np.random.Generator, n: int):
  x3, _ = make_s_curve(n, noise=0.1, random_state=_sk_seed(rng))
  return x3[:, [0, 2]] / S_CURVE_SCALE, None


def _swiss_roll(rng: np.random.Generator, n: int):
  x3, _ = make_swiss_roll(n, noise=0.5, random_state=_sk_seed(rng))
  return x3[:, [0, 2]] / SWISS_ROLL_SCALE, None


def _moons(rng: np.random.Generator, n: int):
  x, y = make_moons(n, noise=0.05, random_state=_sk_seed(rng))
  return (x - np.asarray(MOONS_SHIFT)) / MOONS_SCALE, y


def _eight_gaussians(rng: np.random.Generator, n: int):
  k = rng.integers(0, 8, size=n)
  angle = 2.0 * math.pi * k / 8.0
  centres = GAUSSIANS_RADIUS * np.stack([np.cos(angle), np.sin(angle)], axis=1)
  return centres + GAUSSIANS_STD * rng.standard_normal((n, 2)), k


_BLACK_CELLS = np.array([(i, j) for i in range(4) for j in range(4) if (i + j) % 2 == 0])


def _checkerboard(rng: np.random.Generator, n: int):
  cells = _BLACK_CELLS[rng.integers(0, len(_BLACK_CELLS), size=n)]
  return -1.0 + 0.5 * (cells + rng.random((n, 2))), None


_DRAWS: dict[str, Draw] = {
  "s_curve": _s_curve,
  "swiss_roll": _swiss_roll,
  "moons": _moons,
  "8gaussians": _eight_gaussians,
  "checkerboard": _checkerboard,
}
TOY2D_NAMES = tuple(_DRAWS)
# Classes a toy set can label its points with (0: no labels).
TOY2D_NUM_CLASSES = {"s_curve": 0, "swiss_roll": 0, "moons": 2, "8gaussians": 8, "checkerboard": 0}


def _check_name(name: str) -> str:
  if name.startswith("toy2d/"):
    name = name[len("toy2d/") :]
  if name not in _DRAWS:
    raise ConfigError(
      f"unknown toy2d data set {name!r}; choose one of {', '.join(TOY2D_NAMES)} "
      "(e.g. --config.data.name=toy2d/s_curve)"
    )
  return name


def draw(name: str, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray | None]:
  """n points (float32 [n, 2]) and labels (int32 [n], or None) from a numpy Generator."""
  name = _check_name(name)
  if int(n) != n or n < 1:
    raise DataError(f"number of points must be a positive integer, got {n!r}")
  x, y = _DRAWS[name](rng, int(n))
  return (np.asarray(x, dtype=np.float32), None if y is None else np.asarray(y, dtype=np.int32))


def _generator(key_or_seed: Any) -> np.random.Generator:
  """A numpy Generator from an int seed, a sequence of ints, a Generator or a jax PRNG key."""
  if isinstance(key_or_seed, np.random.Generator):
    return key_or_seed
  if isinstance(key_or_seed, (int, np.integer)):
    return base.rng_for(key_or_seed, base.TAG_SAMPLE)
  if isinstance(key_or_seed, (tuple, list)):
    return np.random.default_rng([base.TAG_SAMPLE, *[base.seed_entropy(s) for s in key_or_seed]])
  # a jax key: new-style typed key or legacy uint32 [2]
  arr = key_or_seed
  if jax.dtypes.issubdtype(getattr(arr, "dtype", None), jax.dtypes.prng_key):
    arr = jax.random.key_data(arr)
  words = np.asarray(arr).astype(np.uint64).ravel()
  if words.size == 0:
    raise DataError(f"cannot derive a seed from {key_or_seed!r}")
  return np.random.default_rng([base.TAG_SAMPLE, *[int(w) for w in words]])


def sample_toy2d(name: str, n: int, key_or_seed: int | Any, *, with_labels: bool = False):
  """Fresh draws from the true toy distribution `name` ("s_curve" or "toy2d/s_curve", ...).

  Returns float32 [n, 2] points (and int32 [n] labels, or None, with with_labels=True).
  Deterministic in key_or_seed: an int, a tuple of ints, a numpy Generator or a jax PRNG key.
  Evaluation compares model samples against these draws.
  """
  x, y = draw(name, n, _generator(key_or_seed))
  return (x, y) if with_labels else x


def validate_toy2d(sub: str, data_config) -> int:
  """Checks config.data (complete: `base.complete_config`) for toy2d/<sub>; returns the number of
  label classes used."""
  sub = _check_name(sub)
  num_classes = data_config.num_classes
  natural = TOY2D_NUM_CLASSES[sub]
  if num_classes not in (0, natural):
    if natural:
      fix = f"--config.data.num_classes={natural} (labels) or 0"
    else:
      fix = "--config.data.num_classes=0 (it has no labels)"
    raise ConfigError(f"config.data.num_classes={num_classes} does not match toy2d/{sub}; set {fix}")
  num_points = data_config.toy2d_num_points
  if int(num_points) != num_points or num_points < 0:
    raise ConfigError(
      f"config.data.toy2d_num_points={num_points!r} must be 0 (endless stream of "
      "fresh points) or a positive number of points"
    )
  base.check_no_image_options(f"toy2d/{sub}", data_config, ["random_flip", "center_crop"])
  return int(num_classes)


def fixed_set(sub: str, num_points: int, seed: int) -> tuple[np.ndarray, np.ndarray | None]:
  """The fixed toy set used when toy2d_num_points > 0: a function of (name, N, seed) only."""
  return draw(sub, num_points, base.rng_for(seed, base.TAG_TOY_FIXED_SET))


def endless_stream(
  sub: str,
  seed: int,
  global_batch: int,
  local_batch: int,
  process_index: int,
  start_step: int,
  with_labels: bool,
) -> Iterator[dict[str, np.ndarray]]:
  """Global batch k = B fresh points drawn from (seed, k); this process takes rows [p*b, (p+1)*b)."""
  lo, hi = process_index * local_batch, (process_index + 1) * local_batch
  step = int(start_step)
  while True:
    x, y = draw(sub, global_batch, base.rng_for(seed, base.TAG_TOY_STREAM, step))
    batch = {"x": x[lo:hi]}
    if with_labels:
      batch["label"] = y[lo:hi]
    yield batch
    step += 1
