"""Conditioning inputs derived from each batch (config.data.cond), added as extra batch entries.

- "" (default): nothing; batches are {"x", ["label"]}.
- "sr": super-resolution, the SR3 / Palette arrangement. The low-resolution image is the
  `config.data.sr_factor`-times area-downsampled image (8x8 digits, factor 2: 4x4); the batch gains
  "x_cond", that low-resolution image upsampled back to full size by bicubic interpolation
  (Keys' cubic, a = -0.5, `jax.image.resize(..., "cubic")`) and clipped to [-1, 1]. The model
  receives it concatenated to its input channels (`config.model.cond_channels = channels`), and
  the same bicubic image is the baseline a super-resolution model has to beat.
- "caption": a context for cross-attention: the batch gains "context", int32 [b, 3] digit
  captions [class, thin|thick, slanted-left|upright|slanted-right] (`jaxdiff.data.captions`),
  computed from the label and the image. Digits only.

Every entry is a pure function of the batch, so resumed streams and multi-process batches stay
exactly as they were. The functions below take config.data, complete or partial (e.g. {"cond": "sr"};
completed once per call by `base.complete_data`).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from typing import Any

import jax
import numpy as np

from jaxdiff.data import base
from jaxdiff.data.captions import VOCAB, caption_tokens
from jaxdiff.errors import ConfigError, DataError

__all__ = [
  "COND_KINDS",
  "cond_kind",
  "validate_cond",
  "provided_inputs",
  "downsample",
  "upsample_bicubic",
  "sr_input",
  "add_conditioning",
  "with_conditioning",
]

COND_KINDS = ("", "sr", "caption")


def cond_kind(data_config: Any) -> str:
  """config.data.cond ("" when an older config lacks the field)."""
  return _kind(base.complete_data(data_config))


def _kind(data: Any) -> str:
  kind = data.cond or ""
  if kind not in COND_KINDS:
    raise ConfigError(
      f"config.data.cond={kind!r} is not valid; choose one of {list(COND_KINDS)} "
      "('' = none, 'sr' = low-resolution image, 'caption' = digit captions)"
    )
  return kind


def provided_inputs(data_config: Any) -> dict[str, int]:
  """The model inputs config.data.cond adds to every batch, with their size: {"context": the
  vocabulary size of the caption tokens} or {"x_cond": its channels} ({} for none). What a model
  takes is checked against it (`jaxdiff.conditioning.Conditioning.validate`)."""
  data = base.complete_data(data_config)
  kind = _kind(data)
  if kind == "caption":
    return {"context": len(VOCAB)}
  if kind == "sr":
    return {"x_cond": int(data.channels)}
  return {}


def _sr_factor(data: Any) -> int:
  factor = data.sr_factor
  if isinstance(factor, bool) or not isinstance(factor, int) or factor < 2:
    raise ConfigError(f"config.data.sr_factor must be an integer >= 2, got {factor!r}")
  return factor


def validate_cond(
  data_config: Any, family: str, kind_of_data: str, image_size: int | None, num_classes: int
) -> str:
  """Checks config.data.cond against the data set; returns the kind."""
  data = base.complete_data(data_config)
  kind = _kind(data)
  if kind and kind_of_data != "image":
    raise ConfigError(f"config.data.cond={kind!r} needs image data, not {data.name!r}")
  if kind == "sr":
    factor = _sr_factor(data)
    if image_size is not None and image_size % factor:
      raise ConfigError(f"config.data.sr_factor={factor} does not divide the image size {image_size}")
  if kind == "caption":
    if family != "digits":
      raise ConfigError(
        f"config.data.cond='caption' describes the 8x8 digits; {data.name!r} has no "
        "captions (feed a 'context' entry from your own pipeline instead)"
      )
    if num_classes != 10:
      raise ConfigError("config.data.cond='caption' needs the digit labels: set config.data.num_classes=10")
  return kind


def downsample(x: np.ndarray, factor: int) -> np.ndarray:
  """Area (box) downsampling of NHWC images by an integer factor."""
  x = np.asarray(x, np.float32)
  n, h, w, c = x.shape
  if h % factor or w % factor:
    raise DataError(f"image size {h}x{w} is not divisible by the downsampling factor {factor}")
  return x.reshape(n, h // factor, factor, w // factor, factor, c).mean(axis=(2, 4))


@functools.cache
def _resize_fn(shape: tuple, out_hw: tuple):
  return jax.jit(lambda a: jax.image.resize(a, (shape[0],) + out_hw + (shape[3],), method="cubic"))


def upsample_bicubic(x_low: np.ndarray, size: int) -> np.ndarray:
  """Bicubic upsampling (Keys, a = -0.5) of NHWC images to size x size, clipped to [-1, 1].
  Runs on the host CPU, as the rest of the input pipeline."""
  x_low = np.asarray(x_low, np.float32)
  with jax.default_device(jax.devices("cpu")[0]):
    out = _resize_fn(tuple(x_low.shape), (size, size))(x_low)
  return np.clip(np.asarray(out), -1.0, 1.0)


def sr_input(x: np.ndarray, factor: int = 2) -> tuple[np.ndarray, np.ndarray]:
  """(low-resolution images, their bicubic upsampling to x's size): the "sr" conditioning of x."""
  low = downsample(x, factor)
  return low, upsample_bicubic(low, np.asarray(x).shape[1])


def add_conditioning(batch: dict[str, np.ndarray], data_config: Any) -> dict[str, np.ndarray]:
  """The batch with the entries config.data.cond asks for (a new dict; the input is kept)."""
  return _add(batch, base.complete_data(data_config))


def _add(batch: dict[str, np.ndarray], data: Any) -> dict[str, np.ndarray]:
  kind = _kind(data)
  if not kind:
    return batch
  out = dict(batch)
  if kind == "sr":
    out["x_cond"] = sr_input(batch["x"], _sr_factor(data))[1]
  else:
    if "label" not in batch:
      raise ConfigError("config.data.cond='caption' needs labels in the batches (config.data.num_classes=10)")
    out["context"] = caption_tokens(batch["x"], batch["label"])
  return out


def with_conditioning(
  stream: Iterator[dict[str, np.ndarray]], data_config: Any
) -> Iterator[dict[str, np.ndarray]]:
  """Wraps a batch stream with add_conditioning (returns the stream itself when there is none)."""
  data = base.complete_data(data_config)
  if not _kind(data):
    return stream
  return (_add(b, data) for b in stream)
