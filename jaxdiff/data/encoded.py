"""Encoded (latent) data sets: the on-disk format and the training reader (``config.data.name = "latents"``).

A set is a folder: ``manifest.json`` plus ArrayRecord shards ``shard-NNNNN.array_record``. One record is
one image: its int32 label, then the posterior mean and std of its latent (and, when encoded with
flips, those of its mirror image), as raw little-endian arrays of the manifest's dtype and shape.

Why ArrayRecord: random access by index (a fresh global permutation every epoch, no shuffle buffer,
resuming at any step without replaying the stream) and reads of many records at once; it is what
TFDS and grain read (``grain.MapDataset.source(ArrayRecordDataSource(paths))`` takes these
shards unchanged), and it is installed with tensorflow-datasets. TFRecord would read sequentially
only, so a resumed run would either replay its stream or lose the shuffle.

The reader draws ``z = mean + std * eps`` afresh at every step (seeded by config.seed and the step),
picks the flip at random when the set has one, and applies the autoencoder's scaling and shift from
the manifest, so batches are ``{"x": normalised latents, "label"}`` like any other data set's.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from PIL import Image

from jaxdiff import fileio
from jaxdiff.data import base
from jaxdiff.data.embedded import fixed_set_indices
from jaxdiff.errors import ConfigError, DataError, MissingDependencyError

__all__ = [
  "MANIFEST",
  "FORMAT",
  "TAG_LATENT_NOISE",
  "RecordLayout",
  "shard_name",
  "read_manifest",
  "encoded_info",
  "open_source",
  "latent_stream",
  "adm_center_crop",
  "normalize",
]

MANIFEST = "manifest.json"
FORMAT = "jaxdiff-latents/1"
TAG_LATENT_NOISE = 11  # the per-step draw z = mean + std * eps (and the flip choice)


def shard_name(index: int) -> str:
  return f"shard-{index:05d}.array_record"


class RecordLayout:
  """Packs / unpacks one record: label, then (mean, std) for each stored view (1, or 2 with flips)."""

  def __init__(self, shape: Sequence[int], dtype: str, views: int):
    self.shape, self.dtype, self.views = tuple(int(s) for s in shape), np.dtype(dtype), int(views)
    self.size = int(np.prod(self.shape))

  def pack(self, label: int, means: Sequence[np.ndarray], stds: Sequence[np.ndarray]) -> bytes:
    parts = [np.asarray([label], "<i4").tobytes()]
    for m, s in zip(means, stds):
      parts += [
        np.asarray(m, self.dtype.newbyteorder("<")).tobytes(),
        np.asarray(s, self.dtype.newbyteorder("<")).tobytes(),
      ]
    return b"".join(parts)

  def unpack(self, records: Sequence[bytes]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(labels [b], means [b, views, *shape], stds [b, views, *shape]) as int32 / float32."""
    labels = np.frombuffer(b"".join(r[:4] for r in records), "<i4").astype(np.int32)
    body = np.frombuffer(b"".join(r[4:] for r in records), self.dtype.newbyteorder("<"))
    body = body.reshape(len(records), self.views, 2, *self.shape).astype(np.float32)
    return labels, body[:, :, 0], body[:, :, 1]


def read_manifest(path: str) -> dict:
  """The manifest of an encoded set at `path`; DataError when it is missing, partial or foreign."""
  file = fileio.join(path, MANIFEST)
  if not fileio.exists(file):
    raise DataError(
      f"{path} has no {MANIFEST}: not a finished encoded set. Run (or resume) "
      f"`python -m jaxdiff.latents encode --vae=... --config=... --out={path}`."
    )
  manifest = json.loads(fileio.read_text(file))
  if manifest.get("format") != FORMAT:
    raise DataError(f"{file}: format {manifest.get('format')!r} is not {FORMAT!r}; re-encode the set.")
  return manifest


def encoded_info(data_config) -> base.DatasetInfo:
  """DatasetInfo of the encoded set in data_config.data_dir; ConfigError naming the field that
  disagrees with its manifest (image_size / channels are the latent's, num_classes 0 or the set's)."""
  if not data_config.data_dir:
    raise ConfigError(
      "config.data.name='latents' reads an encoded set: set --config.data.data_dir=DIR "
      "(written by python -m jaxdiff.latents encode --out=DIR)"
    )
  manifest = read_manifest(data_config.data_dir)
  h, w, c = manifest["latent_shape"]
  for field, want in (("image_size", h), ("channels", c)):
    if int(data_config[field]) != want:
      raise ConfigError(
        f"config.data.{field}={data_config[field]} but the encoded set {data_config.data_dir} holds "
        f"{h}x{w}x{c} latents; set --config.data.{field}={want}"
      )
  classes = int(manifest["data"]["num_classes"])
  if int(data_config.num_classes) not in (0, classes):
    raise ConfigError(
      f"config.data.num_classes={data_config.num_classes} but the encoded set has {classes} classes; "
      f"set --config.data.num_classes={classes} (or 0 for no labels)"
    )
  return base.DatasetInfo(
    "latents", "image", (h, w, c), int(data_config.num_classes), int(manifest["num_examples"])
  )


def _array_record():
  try:
    from array_record.python import array_record_data_source, array_record_module
  except ImportError as e:
    raise MissingDependencyError(
      "encoded latent sets are ArrayRecord files: install array-record (it comes with "
      "`pip install 'jaxdiff[tfds]'`)"
    ) from e
  return array_record_module, array_record_data_source


def open_source(path: str, manifest: dict) -> Any:
  """Random-access reader over every shard of the set (``len``, ``__getitems__``)."""
  _, ds = _array_record()
  paths = [fileio.join(path, s["file"]) for s in manifest["shards"]]
  for p in paths:
    if not fileio.exists(p):
      raise DataError(f"{p} is missing: the encoded set at {path} is incomplete; resume the encode command.")
  return ds.ArrayRecordDataSource(paths)


def normalize(z: np.ndarray, scaling: dict) -> np.ndarray:
  """Raw latents -> the diffusion model's space with the manifest's ``scaling`` (see
  jaxdiff.models.autoencoder.normalize_latents: the same formula)."""
  if scaling.get("latents_mean") is not None and scaling.get("latents_std") is not None:
    mean, std = (
      np.asarray(scaling["latents_mean"], np.float32),
      np.asarray(scaling["latents_std"], np.float32),
    )
    return (z - mean) * np.float32(scaling["scaling_factor"]) / std
  return (z - np.float32(scaling.get("shift_factor") or 0.0)) * np.float32(scaling["scaling_factor"])


def _host_range(n: int, process_index: int, process_count: int) -> tuple[int, int]:
  """This process's contiguous share of n examples (the split tfds.even_splits makes)."""
  return n * process_index // process_count, n * (process_index + 1) // process_count


def latent_stream(
  path: str,
  *,
  seed: int,
  local_batch: int,
  process_index: int,
  process_count: int,
  start_step: int,
  with_labels: bool,
) -> Iterator[dict[str, np.ndarray]]:
  """Endless batches {"x": normalised latents [b, h, w, c] float32, "label"} of this process's share
  of the encoded set; every draw (order, flip, eps) is a function of (seed, process, step)."""
  manifest = read_manifest(path)
  layout = RecordLayout(
    manifest["latent_shape"], manifest["dtype"], 2 if manifest["preprocessing"].get("flip") else 1
  )
  source = open_source(path, manifest)
  lo, hi = _host_range(len(source), process_index, process_count)
  if hi - lo < 1:
    raise DataError(f"the encoded set at {path} has {len(source)} examples: none for process {process_index}")
  step = int(start_step)
  for idx in fixed_set_indices(hi - lo, seed, local_batch, local_batch, 0, step):
    labels, means, stds = layout.unpack(source.__getitems__([int(i) + lo for i in idx]))
    rng = base.rng_for(seed, TAG_LATENT_NOISE, process_index, step)
    view = rng.integers(0, layout.views, size=len(idx))
    mean, std = means[np.arange(len(idx)), view], stds[np.arange(len(idx)), view]
    z = mean + std * rng.standard_normal(mean.shape, dtype=np.float32)
    batch = {"x": normalize(z, manifest["vae"]["scaling"]).astype(np.float32)}
    if with_labels:
      batch["label"] = labels
    yield batch
    step += 1


def adm_center_crop(image: np.ndarray, size: int) -> np.ndarray:
  """ADM's ``center_crop_arr``: halve with a box filter while the short side is >= 2 * size, resize
  bicubically so the short side is `size`, then crop the centre `size` x `size` (uint8 HWC)."""
  pil = Image.fromarray(np.asarray(image).squeeze(-1) if image.shape[-1] == 1 else np.asarray(image))
  while min(pil.size) >= 2 * size:
    pil = pil.resize(tuple(x // 2 for x in pil.size), resample=Image.BOX)
  scale = size / min(pil.size)
  pil = pil.resize(tuple(round(x * scale) for x in pil.size), resample=Image.BICUBIC)
  arr = np.asarray(pil)
  arr = arr[..., None] if arr.ndim == 2 else arr
  top, left = (arr.shape[0] - size) // 2, (arr.shape[1] - size) // 2
  return arr[top : top + size, left : left + size]
