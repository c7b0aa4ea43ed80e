"""Entry points of jaxdiff.data: config -> info, batches, arrays, preview image.

Dispatches on config.data.name: "digits" and "toy2d/<name>" are embedded (numpy, no TensorFlow),
"tfds/<name>" goes through jaxdiff.data.tfds_pipeline (TensorFlow imported only then), "latents" reads
an encoded set (jaxdiff.data.encoded). With config.latent.vae set on an image set, the data fields are
the latent's and the images are read at the autoencoder's size (jaxdiff.data.latent_images): the stream
yields images, which jaxdiff.training.latent_space.encode_stream encodes.

Each entry point takes a config that may be partial (e.g. {"data": {"name": "digits"}}, or an old
workdir's config) and completes it once (`base.complete_config`: the package defaults, and for the
data fields it leaves out num_classes = 0, a TFDS set's image_size = channels = 0); everything
below reads plain attributes of the complete config.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from jaxdiff import images
from jaxdiff.data import base, derived_inputs, embedded, encoded, latent_images, tfds_pipeline, toy2d
from jaxdiff.errors import ConfigError, DataError

Batch = dict[str, np.ndarray]

PREVIEW_REFERENCE_STREAM = 7  # the true-distribution draw behind a fixed toy2d set's preview


def _split(config, split: str | None) -> str:
  return split if split is not None else config.data.split


def dataset_info(config, split: str | None = None) -> base.DatasetInfo:
  """Validates config.data and describes the examples that create_dataset(config) yields.

  Raises ValueError naming the config field and the fix (unknown name, image_size / channels /
  num_classes that do not match the data set, ...), and DatasetNotFoundError for a TFDS data
  set that is not prepared in config.data.data_dir.
  """
  return _checked_info(base.complete_config(config), split)


def _checked_info(config, split: str | None) -> base.DatasetInfo:
  info = _info(config, split)
  family, _ = base.parse_name(config.data.name)
  derived_inputs.validate_cond(
    config.data, family, info.kind, info.shape[0] if info.kind == "image" else None, info.num_classes
  )
  return info


def _info(config, split: str | None) -> base.DatasetInfo:
  if latent_images.encodes_on_the_fly(config):  # the images' info with the latent's shape
    pixel = _info(latent_images.pixel_config(config), split)
    size, channels = int(config.data.image_size), int(config.data.channels)
    return base.DatasetInfo(
      pixel.name, "image", (size, size, channels), pixel.num_classes, pixel.num_examples
    )
  name = config.data.name
  family, sub = base.parse_name(name)
  split = _split(config, split)
  if family == "digits":
    num_classes = embedded.validate_digits(config.data, split)
    n = len(embedded.load_digits_split(split)[1])
    return base.DatasetInfo(name, "image", embedded.DIGITS_SHAPE, num_classes, n)
  if family == "toy2d":
    num_classes = toy2d.validate_toy2d(sub, config.data)
    num_points = int(config.data.toy2d_num_points)
    return base.DatasetInfo(name, "points", (2,), num_classes, num_points or None)
  if family == "latents":
    return encoded.encoded_info(config.data)
  return tfds_pipeline.tfds_info(sub, config.data, split, name)


def create_dataset(
  config,
  *,
  batch_size: int | None = None,
  process_index: int | None = None,
  process_count: int | None = None,
  start_step: int = 0,
  split: str | None = None,
) -> Iterator[Batch]:
  """Endless iterator of this process's numpy batches: {"x": float32, "label": int32 [b]}, plus
  the conditioning entries config.data.cond asks for ("x_cond" or "context";
  jaxdiff.data.derived_inputs).

  x is [b, H, W, C] in [-1, 1] for images or [b, 2] for toy2d points; "label" is present iff
  the data set is used with labels (config.data.num_classes > 0). batch_size is the GLOBAL
  batch (default config.train.batch_size); this process gets batch_size // process_count rows
  (process_index / process_count default to jax's). Deterministic given config.seed, and
  `start_step=k` yields exactly what the stream yields from its k-th batch on (resume).
  Embedded sets: the P processes' batches, concatenated in process order, are the 1-process
  global batch. TFDS: each process reads its own disjoint share of the split.
  """
  return _create(
    base.complete_config(config),
    batch_size=batch_size,
    process_index=process_index,
    process_count=process_count,
    start_step=start_step,
    split=split,
  )


def _create(config, *, batch_size, process_index, process_count, start_step, split) -> Iterator[Batch]:
  if latent_images.encodes_on_the_fly(config):
    config = latent_images.pixel_config(config)  # images to encode, at the autoencoder's size
  name = config.data.name
  family, sub = base.parse_name(name)
  split = _split(config, split)
  global_batch = config.train.batch_size if batch_size is None else batch_size
  process_index, process_count = base.resolve_process(process_index, process_count)
  local_batch = base.local_batch_size(global_batch, process_count)
  if int(start_step) != start_step or start_step < 0:
    raise DataError(f"start_step must be a non-negative integer, got {start_step!r}")
  seed = int(config.seed)
  if derived_inputs.cond_kind(config.data):
    derived_inputs.validate_cond(
      config.data,
      family,
      "points" if family == "toy2d" else "image",
      None,
      int(config.data.num_classes),
    )
  stream = _create_stream(
    config, family, sub, split, global_batch, local_batch, process_index, process_count, int(start_step), seed
  )
  return derived_inputs.with_conditioning(stream, config.data)


def _create_stream(
  config, family, sub, split, global_batch, local_batch, process_index, process_count, start_step, seed
):
  name = config.data.name
  if family == "digits":
    num_classes = embedded.validate_digits(config.data, split)
    x, y = embedded.load_digits_split(split)
    return embedded.fixed_set_stream(
      x, y if num_classes else None, seed, global_batch, local_batch, process_index, int(start_step)
    )
  if family == "toy2d":
    num_classes = toy2d.validate_toy2d(sub, config.data)
    num_points = int(config.data.toy2d_num_points)
    if num_points == 0:
      return toy2d.endless_stream(
        sub, seed, global_batch, local_batch, process_index, int(start_step), with_labels=num_classes > 0
      )
    x, y = toy2d.fixed_set(sub, num_points, seed)
    return embedded.fixed_set_stream(
      x, y if num_classes else None, seed, global_batch, local_batch, process_index, int(start_step)
    )
  if family == "latents":
    encoded.encoded_info(config.data)
    return encoded.latent_stream(
      config.data.data_dir,
      seed=seed,
      local_batch=local_batch,
      process_index=process_index,
      process_count=process_count,
      start_step=start_step,
      with_labels=int(config.data.num_classes) > 0,
    )
  return tfds_pipeline.tfds_stream(
    sub,
    config.data,
    name=name,
    seed=seed,
    local_batch=local_batch,
    process_index=process_index,
    process_count=process_count,
    start_step=int(start_step),
    split=split,
  )


def load_arrays(config, split: str = "train") -> tuple[np.ndarray, np.ndarray | None]:
  """All examples of an embedded data set as numpy: (x, labels or None).

  digits: split "train" (1438, what training uses by default), "test" (359 held-out digits, a
  fixed stratified 20% of each class) or "all" (1797); x float32 [N, 8, 8, 1] in [-1, 1],
  labels int32 0-9. toy2d with toy2d_num_points = N > 0: the fixed training set ("train" or
  "all"); for an endless toy2d stream there is no finite set: use sample_toy2d for fresh draws.
  """
  config = base.complete_config(config)
  family, sub = base.parse_name(config.data.name)
  if family == "digits":
    return embedded.load_digits_split(split)
  if family == "toy2d":
    toy2d.validate_toy2d(sub, config.data)
    num_points = int(config.data.toy2d_num_points)
    if num_points == 0:
      raise ConfigError(
        f"{config.data.name} is an endless stream (config.data.toy2d_num_points=0): "
        "there is no fixed set to load; use jaxdiff.data.sample_toy2d(name, n, seed) "
        "for fresh draws, or set --config.data.toy2d_num_points=N"
      )
    if split not in ("train", "all"):
      raise DataError(
        f"split={split!r}: a fixed toy2d set has only 'train' (= 'all'); for "
        "held-out points use jaxdiff.data.sample_toy2d(name, n, seed)"
      )
    return toy2d.fixed_set(sub, num_points, int(config.seed))
  raise ConfigError(
    f"load_arrays reads embedded data sets (digits, toy2d/...), not "
    f"{config.data.name!r}; iterate create_dataset(config) for TFDS data"
  )


def preview(config, path: str, num: int | None = None, *, split: str | None = None) -> str:
  """Writes a PNG of real training data: a grid of `num` images (default 64), or a scatter plot
  of `num` points (default 2048) for toy2d, taken from the first batch of the stream exactly as
  create_dataset yields it (one process, batch = num). Returns the path."""
  config = base.complete_config(config)
  info = _checked_info(config, split)
  if num is None:
    num = 64 if info.kind == "image" else 2048
  batch = next(
    iter(_create(config, batch_size=num, process_index=0, process_count=1, start_step=0, split=split))
  )
  if info.kind == "image":
    images.save_image_grid(batch["x"], path)
  else:
    reference = None
    family, sub = base.parse_name(config.data.name)
    if info.num_examples is not None:  # fixed set: show which part of the truth it covers
      reference = toy2d.sample_toy2d(sub, 4096, (int(config.seed), PREVIEW_REFERENCE_STREAM))
    images.save_scatter(
      batch["x"],
      path,
      labels=batch.get("label"),
      reference=reference,
      title=f"{config.data.name}: {num} points of the first batch",
    )
  return path
