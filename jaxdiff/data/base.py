"""Shared pieces of the input pipeline: the info record, errors, the completion of partial configs,
name parsing, seeds, batch split.

Kept free of TensorFlow and scikit-learn so that `import jaxdiff.data` stays light.
`DatasetNotFoundError` is `jaxdiff.errors.DatasetNotFoundError` (importable here as before).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterable, Mapping
from typing import Any

import jax
import ml_collections
import numpy as np

from jaxdiff.configs import default, with_defaults
from jaxdiff.errors import ConfigError, DataError
from jaxdiff.errors import DatasetNotFoundError as DatasetNotFoundError

# Tags that keep the random streams of different uses apart (same config.seed, other purpose).
TAG_EPOCH_ORDER = 1  # per-epoch permutation of a fixed set
TAG_TOY_FIXED_SET = 2  # the fixed toy2d set (toy2d_num_points > 0)
TAG_TOY_STREAM = 3  # the endless toy2d stream, one draw per step
TAG_TFDS = 4  # TFDS shuffle / flip seeds
TAG_SAMPLE = 5  # sample_toy2d(name, n, int_seed)


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  """What a configured data set yields per example.

  name: config.data.name; kind: "image" (NHWC in [-1, 1]) or "points" ([D] floats);
  shape: per-example shape, e.g. (8, 8, 1) or (2,); num_classes: labels 0..num_classes-1 in
  every batch (0: no "label" key); num_examples: examples in the configured split (all
  processes together), None for an endless stream.
  """

  name: str
  kind: str
  shape: tuple[int, ...]
  num_classes: int
  num_examples: int | None


def parse_name(name: str) -> tuple[str, str]:
  """Splits config.data.name into (family, sub-name): "digits" -> ("digits", "")."""
  if not isinstance(name, str) or not name:
    raise ConfigError(f"config.data.name must be a non-empty string, got {name!r}")
  if name in ("digits", "latents"):
    return name, ""
  if name == "none":  # a model imported without a training set (python -m jaxdiff.interop import)
    raise DataError(
      "config.data.name='none': this run has no training data (a model imported from diffusers without "
      "--data). To fine-tune it, name a data set of its image size and channels, e.g. "
      "--config.data.name=tfds/cifar10 (or import again with --data)."
    )
  for family in ("toy2d", "tfds"):
    prefix = family + "/"
    if name.startswith(prefix) and len(name) > len(prefix):
      return family, name[len(prefix) :]
  raise ConfigError(
    f"config.data.name={name!r} is not a known data set. Use 'digits', 'latents' (an encoded set in data_dir), "
    "'toy2d/<s_curve|swiss_roll|moons|8gaussians|checkerboard>' or 'tfds/<name>' "
    "(e.g. tfds/mnist, tfds/cifar10), e.g. --config.data.name=digits"
  )


def seed_entropy(seed: Any) -> int:
  """config.seed (any int, possibly negative) as a non-negative 64-bit integer."""
  return int(seed) % (1 << 64)


def rng_for(seed: Any, tag: int, *more: int) -> np.random.Generator:
  """A numpy Generator determined only by (seed, tag, *more): the stateless way to get order."""
  return np.random.default_rng([seed_entropy(seed), int(tag), *[int(m) for m in more]])


def local_batch_size(global_batch: int, process_count: int) -> int:
  """This process's share of the global batch; a clear ValueError when it does not divide."""
  if int(global_batch) != global_batch or global_batch < 1:
    raise ConfigError(
      f"the global batch size (config.train.batch_size) must be a positive integer, got {global_batch!r}"
    )
  if process_count < 1:
    raise DataError(f"process_count must be >= 1, got {process_count}")
  if global_batch % process_count:
    fix = process_count * -(-global_batch // process_count)
    raise ConfigError(
      f"global batch size {global_batch} (config.train.batch_size, the batch over all "
      f"processes) is not divisible by the number of processes {process_count}; set "
      f"--config.train.batch_size to a multiple of {process_count} (e.g. {fix})."
    )
  return int(global_batch) // process_count


def resolve_process(process_index: int | None, process_count: int | None) -> tuple[int, int]:
  """Defaults to jax.process_index() / jax.process_count(); checks 0 <= index < count."""
  if process_index is None:
    process_index = jax.process_index()
  if process_count is None:
    process_count = jax.process_count()
  if not 0 <= process_index < process_count:
    raise DataError(f"process_index={process_index} must be in [0, process_count={process_count})")
  return int(process_index), int(process_count)


def to_global(batch: Mapping[str, Any], sharding: Any | Mapping[str, Any]) -> dict:
  """Builds global jax Arrays from this process's batch: make_array_from_process_local_data per key.

  sharding: one `jax.sharding.Sharding` for every entry (e.g. NamedSharding(mesh, P('data')),
  which splits the leading batch axis of both images and labels), or a dict of them by key.
  Every process must call this with its own share, in the same order.
  """
  out = {}
  for key, value in batch.items():
    s = sharding[key] if isinstance(sharding, Mapping) else sharding
    out[key] = jax.make_array_from_process_local_data(s, np.asarray(value))
  return out


# A field that a data section leaves out takes the package default (jaxdiff/configs/default.py),
# except where that default describes the digits recipe rather than a field left unsaid: a section
# that does not give num_classes has no labels (the package default is the digits' 10), and a TFDS
# section that does not give image_size / channels is refused (0) instead of being read at the
# digits' 8x8x1. These are what the data functions always took for missing fields.
_MISSING_FIELD = {"num_classes": 0}
_MISSING_TFDS_FIELD = {"image_size": 0, "channels": 0}


def _plain(config: Any) -> Any:
  return config.to_dict() if isinstance(config, ml_collections.ConfigDict) else config


def complete_config(config: Any) -> ml_collections.ConfigDict:
  """A complete copy of `config` (a ConfigDict or nested mapping, possibly partial: e.g.
  {"data": {"name": "digits"}}): `jaxdiff.configs.with_defaults`, with the data section's own
  fallbacks above for the fields it leaves out. The data layer's entry points call this once and
  then read every field as a plain attribute."""
  config = {key: _plain(value) for key, value in _plain(config).items()}
  data = config.get("data") or {}
  fallbacks = dict(_MISSING_FIELD)
  if str(data.get("name", "")).startswith("tfds/"):
    fallbacks.update(_MISSING_TFDS_FIELD)
  return with_defaults({**config, "data": {**fallbacks, **data}})


@functools.cache
def _data_fields() -> frozenset[str]:
  return frozenset(default.get_config().data.keys())


def complete_data(data_config: Any) -> ml_collections.ConfigDict:
  """The data section `data_config` (possibly partial: e.g. {"cond": "sr"}) completed as
  complete_config completes a whole config's; a section that is already complete is returned as
  it is (the entry points pass on the section they completed)."""
  if isinstance(data_config, ml_collections.ConfigDict) and _data_fields() <= set(data_config.keys()):
    return data_config
  return complete_config({"data": _plain(data_config)}).data


def check_no_image_options(name: str, data_config: Any, what: Iterable[str]) -> None:
  """Fails when an image-only augmentation is switched on for a data set it cannot apply to
  (data_config: a complete data section)."""
  for field in what:
    if data_config[field]:
      raise ConfigError(
        f"config.data.{field}=True does not apply to {name!r}; set --config.data.{field}=False"
      )
