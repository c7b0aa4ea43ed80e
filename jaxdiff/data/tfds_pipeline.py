"""TFDS input pipeline (config.data.name = "tfds/<name>"), one share of the data per process.

TensorFlow is imported here only, lazily, the first time a TFDS data set is configured, and it
is hidden from every GPU and TPU (`tf.config.set_visible_devices([], ...)`) so it never takes
accelerator memory from JAX: tf.data runs on the host CPU only.

Pipeline, per process: `tfds.split_for_jax_process(split, drop_remainder=True)` (equal,
disjoint shares of the split), read in file order with images still encoded, then an endless
stream of epochs. Epoch e of process p is its share shuffled through a `shuffle_buffer` with a
seed drawn from (config.seed, p, e) alone; each element is then decoded, optionally centre
cropped to a square, resized to image_size (bilinear, antialiased), scaled to [-1, 1] and,
with random_flip, mirrored when a stateless draw from (config.seed, p, e, position) says so.
Batches of the per-process size are cut across epoch boundaries, then prefetched.

Resume: step k starts at element k*b of this process's stream, i.e. epoch (k*b) // n, position
(k*b) % n, where n is the process's share size. The pipeline starts its epoch range there and
skips that many positions of the first epoch *before* decoding, so resuming reads (but does not
decode) at most one epoch of records, and yields exactly what an uninterrupted run yields.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from typing import Any

import numpy as np
from absl import logging

from jaxdiff.data import base
from jaxdiff.errors import ConfigError, DataError, MissingDependencyError

_INSTALL_HINT = (
  "TFDS data sets need TensorFlow and tensorflow-datasets: "
  "pip install 'jaxdiff[tfds]' (tensorflow-cpu is enough)"
)
_CATALOG = "https://www.tensorflow.org/datasets/catalog/overview"


@functools.cache
def import_tf() -> tuple[Any, Any]:
  """Imports (tensorflow, tensorflow_datasets) once, with every GPU and TPU hidden from TF."""
  try:
    import tensorflow as tf
  except ImportError as e:
    raise MissingDependencyError(_INSTALL_HINT) from e
  for kind in ("GPU", "TPU"):
    try:
      tf.config.set_visible_devices([], kind)
    except (RuntimeError, ValueError):  # runtime already started by the caller / no such kind
      pass
  if tf.config.get_visible_devices("GPU"):
    logging.warning(
      "TensorFlow was initialised before jaxdiff could hide the GPUs from it; "
      "tf.data may allocate GPU memory. Import jaxdiff's TFDS pipeline first, or "
      "call tf.config.set_visible_devices([], 'GPU') before using TensorFlow."
    )
  try:
    import tensorflow_datasets as tfds
  except ImportError as e:
    raise MissingDependencyError(_INSTALL_HINT) from e
  return tf, tfds


def _data_dir(data_config) -> str | None:
  return data_config.data_dir or None


def _not_prepared_message(name: str, builder: Any, data_dir: str | None) -> str:
  where = (
    f"data_dir {data_dir!r}"
    if data_dir
    else f"the TFDS default data_dir {str(builder.data_dir_root)!r} (config.data.data_dir is empty)"
  )
  return (
    f"TFDS data set '{name}' is not prepared in {where}: {str(builder.data_path)!r} does not "
    "exist. jaxdiff never downloads data during training. Prepare it once on a machine with "
    f"internet:\n    tfds build {name} --data_dir=/path/to/tensorflow_datasets\n"
    "then set --config.data.data_dir=/path/to/tensorflow_datasets, or copy the prepared "
    f"folder /path/to/tensorflow_datasets/{name} to this machine or to a bucket\n"
    f"    gcloud storage cp -r /path/to/tensorflow_datasets/{name} gs://BUCKET/tensorflow_datasets/\n"
    "and set --config.data.data_dir=gs://BUCKET/tensorflow_datasets (TPU VMs read buckets "
    "directly). Some data sets need files downloaded by hand first (see the data set's page "
    "in the TFDS catalog)."
  )


class _Source:
  """An opened, validated TFDS builder and what the pipeline needs to know about it (data_config:
  a complete data section, `base.complete_config`)."""

  def __init__(self, sub: str, data_config, split: str):
    tf, tfds = import_tf()
    self.tf, self.tfds = tf, tfds
    self.name, self.split = sub, split
    self.data_dir = _data_dir(data_config)
    try:
      self.builder = tfds.builder(sub, data_dir=self.data_dir)
    except tfds.core.DatasetNotFoundError:
      raise base.DatasetNotFoundError(
        f"config.data.name='tfds/{sub}': '{sub}' is not a data set known to "
        f"tensorflow-datasets {tfds.__version__} (nor prepared in data_dir "
        f"{self.data_dir or '(TFDS default)'}). Check the name in the catalog: {_CATALOG}"
      ) from None
    features = self.builder.info.features
    if "image" not in features or not isinstance(features["image"], tfds.features.Image):
      raise DataError(
        f"tfds/{sub} has no 'image' feature; jaxdiff's TFDS pipeline reads image "
        "data sets (features 'image' and optionally 'label')"
      )
    self.image_feature = features["image"]
    h, w, c = self.image_feature.shape
    self.source_shape = (h, w, c)
    label = features["label"] if "label" in features else None
    self.source_classes = label.num_classes if isinstance(label, tfds.features.ClassLabel) else 0

    self.image_size = int(data_config.image_size)
    self.channels = int(data_config.channels)
    self.num_classes = int(data_config.num_classes)
    self.center_crop = bool(data_config.center_crop)
    self.random_flip = bool(data_config.random_flip)
    self.shuffle_buffer = int(data_config.shuffle_buffer)
    if self.image_size < 1:
      raise ConfigError(
        f"config.data.image_size={self.image_size} must be a positive number of "
        f"pixels (images are resized to image_size x image_size)"
      )
    if c is not None and self.channels != c:
      raise ConfigError(
        f"config.data.channels={self.channels}, but tfds/{sub} images have {c} "
        f"channel(s); set --config.data.channels={c}"
      )
    if self.channels not in (1, 3):
      raise ConfigError(f"config.data.channels={self.channels} must be 1 or 3")
    if self.num_classes and not self.source_classes:
      raise ConfigError(
        f"config.data.num_classes={self.num_classes}, but tfds/{sub} has no "
        "'label' class feature; set --config.data.num_classes=0"
      )
    if self.num_classes not in (0, self.source_classes):
      raise ConfigError(
        f"config.data.num_classes={self.num_classes}, but tfds/{sub} has "
        f"{self.source_classes} classes; set --config.data.num_classes="
        f"{self.source_classes} (class labels) or 0 (unconditional)"
      )
    if self.shuffle_buffer < 1:
      raise ConfigError(
        f"config.data.shuffle_buffer={self.shuffle_buffer} must be >= 1 (1 disables shuffling)"
      )
    # Split names are known once the data set is prepared (or mocked with metadata).
    self.num_examples: int | None = None
    if self.builder.info.splits:
      try:
        self.num_examples = int(self.builder.info.splits[split].num_examples)
      except (KeyError, ValueError, AssertionError) as e:
        raise ConfigError(
          f"config.data.split={split!r} is not a split of tfds/{sub} ({e}); "
          f"available: {sorted(self.builder.info.splits)}, e.g. "
          "--config.data.split=train or 'train[:90%]'"
        ) from None

  def read(self, split: Any) -> Any:
    """builder.as_dataset in file order with images left encoded; clear error if not prepared."""
    tf, tfds = self.tf, self.tfds
    read_config = tfds.ReadConfig(try_autocache=True)
    try:
      return self.builder.as_dataset(
        split=split,
        shuffle_files=False,
        decoders={"image": tfds.decode.SkipDecoding()},
        read_config=read_config,
      )
    except AssertionError:
      if not self.builder.data_path.exists():
        raise base.DatasetNotFoundError(
          _not_prepared_message(self.name, self.builder, self.data_dir)
        ) from None
      raise
    except tf.errors.OpError as e:
      raise base.DatasetNotFoundError(
        f"could not read TFDS data set '{self.name}' from "
        f"{self.data_dir or str(self.builder.data_dir_root)!r}: {e.message}. Check "
        "config.data.data_dir and, for gs:// buckets, the machine's access to the bucket."
      ) from None

  def count(self, ds: Any, split: Any) -> int:
    """Number of examples in this process's share (cardinality, split info, or a count)."""
    n = int(ds.cardinality())
    if n >= 0:
      return n
    if self.builder.info.splits:
      return int(self.builder.info.splits[split].num_examples)
    return int(ds.reduce(np.int64(0), lambda acc, _: acc + 1))

  def info(self, name: str) -> base.DatasetInfo:
    return base.DatasetInfo(
      name=name,
      kind="image",
      shape=(self.image_size, self.image_size, self.channels),
      num_classes=self.num_classes,
      num_examples=self.num_examples,
    )


def tfds_info(sub: str, data_config, split: str, name: str) -> base.DatasetInfo:
  """Validates the config against the data set (and that it is prepared); returns its info."""
  src = _Source(sub, data_config, split)
  src.read(split)  # raises DatasetNotFoundError now, at start-up, if the data is missing
  return src.info(name)


def _preprocess_fn(src: _Source, n: int, flip_key: int, encoded: bool):
  """Builds the per-element map: decode, crop, resize, scale to [-1, 1], stateless flip."""
  tf = src.tf
  size, channels = src.image_size, src.channels
  h, w, _ = src.source_shape
  if src.center_crop:
    static_hw = (min(h, w), min(h, w)) if h is not None and w is not None else (None, None)
  else:
    static_hw = (h, w)
  needs_resize = static_hw != (size, size)
  with_label = src.num_classes > 0

  def fn(epoch, pos, image, label):
    if encoded:
      image = src.image_feature.decode_example(image)
    image.set_shape([None, None, channels])
    if src.center_crop:
      shape = tf.shape(image)
      ih, iw = shape[0], shape[1]
      side = tf.minimum(ih, iw)
      image = tf.image.crop_to_bounding_box(image, (ih - side) // 2, (iw - side) // 2, side, side)
    image = tf.cast(image, tf.float32)
    if needs_resize:
      image = tf.image.resize(image, [size, size], method="bilinear", antialias=True)
      image = tf.clip_by_value(image, 0.0, 255.0)
    image = tf.ensure_shape(image, [size, size, channels])
    x = image / 127.5 - 1.0
    if src.random_flip:
      seed = tf.stack([tf.constant(flip_key, tf.int64), epoch * n + pos])
      flip = tf.random.stateless_uniform([], seed=seed) < 0.5
      x = tf.where(flip, tf.reverse(x, axis=[1]), x)
    out = {"x": x}
    if with_label:
      out["label"] = tf.cast(label, tf.int32)
    return out

  return fn


def tfds_stream(
  sub: str,
  data_config,
  *,
  name: str,
  seed: int,
  local_batch: int,
  process_index: int,
  process_count: int,
  start_step: int,
  split: str,
) -> Iterator[dict[str, np.ndarray]]:
  """Endless, deterministic per-process batches {"x", ["label"]} from a TFDS data set.

  The pipeline is built (and the data set checked) now; batches are produced on iteration.
  """
  src = _Source(sub, data_config, split)
  tf, tfds = src.tf, src.tfds
  share = tfds.split_for_jax_process(
    split, process_index=process_index, process_count=process_count, drop_remainder=True
  )
  ds = src.read(share)
  n = src.count(ds, share)
  if n < 1:
    raise DataError(
      f"tfds/{sub} split {split!r} leaves process {process_index} of "
      f"{process_count} no examples; use a larger split"
    )
  with_label = src.num_classes > 0
  ds = ds.map(lambda ex: (ex["image"], ex["label"] if with_label else tf.constant(0, tf.int64)))
  encoded = ds.element_spec[0].dtype == tf.string

  keys = base.rng_for(seed, base.TAG_TFDS, process_index).integers(0, 2**62, size=2)
  shuffle_key, flip_key = int(keys[0]), int(keys[1])
  first_epoch, offset = divmod(int(start_step) * local_batch, n)
  buffer = min(src.shuffle_buffer, n)

  def epoch_elements(epoch):
    epoch_seed = tf.random.stateless_uniform(
      [],
      seed=tf.stack([tf.constant(shuffle_key, tf.int64), epoch]),
      minval=0,
      maxval=2**31 - 1,
      dtype=tf.int64,
    )
    elems = ds.shuffle(buffer, seed=epoch_seed, reshuffle_each_iteration=False).enumerate()
    elems = elems.skip(
      tf.where(tf.equal(epoch, first_epoch), tf.constant(offset, tf.int64), tf.constant(0, tf.int64))
    )
    return elems.map(lambda pos, el: (epoch, pos, el[0], el[1]))

  stream = tf.data.Dataset.range(first_epoch, 2**62).flat_map(epoch_elements)
  stream = stream.map(_preprocess_fn(src, n, flip_key, encoded), num_parallel_calls=tf.data.AUTOTUNE)
  stream = stream.batch(local_batch, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
  options = tf.data.Options()
  options.deterministic = True
  stream = stream.with_options(options)
  logging.info(
    "%s split %r, process %d of %d: %d examples, batches of %d, starting at step %d (epoch %d, position %d)",
    name,
    split,
    process_index,
    process_count,
    n,
    local_batch,
    start_step,
    first_epoch,
    offset,
  )
  return _numpy_batches(stream)


def _numpy_batches(stream: Any) -> Iterator[dict[str, np.ndarray]]:
  for batch in stream.as_numpy_iterator():
    yield {k: np.asarray(v) for k, v in batch.items()}
