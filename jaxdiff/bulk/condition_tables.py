"""Per-sample conditioning of a bulk run beyond class labels: captions / contexts, conditioning
images (super-resolution inputs) and inpainting (images to complete and the mask of what to keep).

Each input is a table; sample i takes row i mod (table length), so, as its key and label, its
conditioning is a function of i alone. The canonical description of every choice (with a digest
of any file's contents) goes into the run manifest, so a resumed run must use the same inputs.

Specs (strings, as sample.py's flags take them):

- source images (`--inpaint_source`, `--cond_source`): "digits_test" (the 359 held-out digits),
  "digits_train", or FILE.npz holding "images" (uint8 NHWC, e.g. a sample shard) or "x" (floats
  in [-1, 1]); an optional "labels" array rides along. For `--cond_source` the conditioning
  image is made from each source image by the config's data.cond transform (e.g. "sr": bicubic
  of the 2x-downsampled digit), unless the file holds "x_cond" itself.
- inpainting mask (`--inpaint_mask`, 1 = known / kept, 0 = generated): "top_half",
  "bottom_half", "left_half", "right_half" (the named half is kept), "center" (the central
  half-size square is kept), "border" (everything but that square is kept), or FILE.npy: [H, W],
  [H, W, C] or [N, H, W, C] values in [0, 1].
- context (`--context`, cross-attention models): "uniform" (caption models: sample i gets the
  i-th of the 60 digit captions, class-major), "none" (the null context), a caption
  ("3 thick slanted-right"), captions separated by ";" (cycled), or FILE.npy: int tokens [N, L]
  or embeddings [N, L, D] (cycled).
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

import numpy as np

from jaxdiff import samplers
from jaxdiff.conditioning import Conditioning
from jaxdiff.config_sampling import data_shape, is_image_config
from jaxdiff.data.captions import all_captions, caption_text, parse_caption
from jaxdiff.data.derived_inputs import add_conditioning
from jaxdiff.data.embedded import DIGITS_SHAPE, load_digits_split
from jaxdiff.errors import SamplingError

__all__ = ["MASKS", "SOURCES", "Conditions", "resolve_conditions", "named_mask", "load_source"]

MASKS = ("top_half", "bottom_half", "left_half", "right_half", "center", "border")
SOURCES = ("digits_test", "digits_train")


def _digest(*arrays: np.ndarray) -> str:
  h = hashlib.blake2b(digest_size=10)
  for a in arrays:
    a = np.ascontiguousarray(a)
    h.update(f"{a.dtype}|{a.shape}|".encode())
    h.update(a.tobytes())
  return h.hexdigest()


def named_mask(name: str, shape: tuple[int, int, int]) -> np.ndarray:
  """float32 [H, W, C] mask (1 = known) of a named region."""
  h, w, c = shape
  rows, cols = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
  if name == "top_half":
    m = rows < h // 2
  elif name == "bottom_half":
    m = rows >= h - h // 2
  elif name == "left_half":
    m = cols < w // 2
  elif name == "right_half":
    m = cols >= w - w // 2
  elif name in ("center", "border"):
    inner = (rows >= h // 4) & (rows < h - h // 4) & (cols >= w // 4) & (cols < w - w // 4)
    m = inner if name == "center" else ~inner
  else:
    raise SamplingError(f"--inpaint_mask={name!r}: use one of {', '.join(MASKS)} or a .npy file.")
  return np.repeat(m[..., None], c, axis=-1).astype(np.float32)


def _load_mask(spec: str, shape: tuple[int, int, int]) -> np.ndarray:
  if spec in MASKS:
    return named_mask(spec, shape)
  if not spec.endswith(".npy"):
    raise SamplingError(f"--inpaint_mask={spec!r}: use one of {', '.join(MASKS)} or a .npy file.")
  try:
    m = np.asarray(np.load(spec, allow_pickle=False), np.float32)
  except (OSError, ValueError) as e:
    raise SamplingError(f"--inpaint_mask={spec}: cannot read it ({e}).") from None
  if m.ndim == 2:
    m = m[..., None]
  if m.ndim == 3:
    m = m[None]
  if m.ndim != 4 or m.shape[1:3] != shape[:2] or m.shape[3] not in (1, shape[2]):
    raise SamplingError(
      f"--inpaint_mask={spec} has shape {m.shape}; expected [H, W], [H, W, C] or [N, H, W, C] "
      f"for images of shape {list(shape)}."
    )
  if not np.all((m >= 0) & (m <= 1)):
    raise SamplingError(f"--inpaint_mask={spec} must hold values in [0, 1] (1 = known).")
  return np.broadcast_to(m, m.shape[:3] + (shape[2],)).astype(np.float32)


def load_source(spec: str, shape: tuple[int, int, int], flag: str = "--inpaint_source"):
  """(images float32 [N, H, W, C] in [-1, 1], labels int32 [N] or None, x_cond or None)."""
  if spec in SOURCES:
    if tuple(shape) != DIGITS_SHAPE:
      raise SamplingError(
        f"{flag}={spec}: digits are {list(DIGITS_SHAPE)} images, the model makes {list(shape)}."
      )
    x, y = load_digits_split(spec.split("_", 1)[1])
    return np.asarray(x, np.float32), np.asarray(y, np.int32), None
  if not spec.endswith(".npz"):
    raise SamplingError(
      f"{flag}={spec!r}: use {' or '.join(SOURCES)} or a .npz file with 'images' (uint8) or 'x'."
    )
  try:
    with np.load(spec, allow_pickle=False) as f:
      arrays = {k: np.asarray(f[k]) for k in f.files}
  except (OSError, ValueError) as e:
    raise SamplingError(f"{flag}={spec}: cannot read it ({e}).") from None
  if "images" in arrays:
    x = arrays["images"]
    x = x.astype(np.float32) / 127.5 - 1.0 if x.dtype == np.uint8 else x.astype(np.float32)
  elif "x" in arrays:
    x = arrays["x"].astype(np.float32)
  else:
    raise SamplingError(
      f"{flag}={spec} holds {sorted(arrays)}; it needs 'images' (uint8 NHWC) or 'x' (floats)."
    )
  if x.ndim == 3:
    x = x[..., None]
  if x.ndim != 4 or tuple(x.shape[1:]) != tuple(shape) or len(x) == 0:
    raise SamplingError(f"{flag}={spec}: images have shape {list(x.shape)}, the model makes {list(shape)}.")
  labels = arrays.get("labels")
  labels = None if labels is None else labels.astype(np.int32).reshape(-1)
  if labels is not None and len(labels) != len(x):
    labels = None
  x_cond = arrays.get("x_cond")
  return x, labels, None if x_cond is None else x_cond.astype(np.float32)


def _load_context(spec: str, config) -> tuple[str, np.ndarray | None]:
  """(canonical spec, table [K, L] int32 or [K, L, D] float32, or None for the null context)."""
  text = spec.strip()
  vocab, dim = int(config.model.context_vocab), int(config.model.context_dim)
  if text.lower() in ("none", "null", ""):
    return "none", None
  if text.lower() == "uniform":
    if config.data.cond != "caption":
      raise SamplingError(
        "--context=uniform cycles the digit captions; this model was not trained on them "
        "(config.data.cond != 'caption'): give a .npy file of contexts."
      )
    return "uniform", all_captions()
  if text.endswith(".npy"):
    try:
      table = np.load(text, allow_pickle=False)
    except (OSError, ValueError) as e:
      raise SamplingError(f"--context={text}: cannot read it ({e}).") from None
    if vocab > 0:
      if table.ndim != 2 or not np.issubdtype(table.dtype, np.integer):
        raise SamplingError(
          f"--context={text}: this model embeds tokens (context_vocab={vocab}); give int "
          f"tokens [N, L], not {table.dtype} {list(table.shape)}."
        )
      if table.max(initial=-1) >= vocab:
        raise SamplingError(f"--context={text} holds token ids >= the vocabulary size {vocab}.")
      table = table.astype(np.int32)
    else:
      if table.ndim != 3 or table.shape[2] != dim:
        raise SamplingError(f"--context={text}: expected embeddings [N, L, {dim}], got {list(table.shape)}.")
      table = table.astype(np.float32)
    return f"{os.path.abspath(text)}#{_digest(table)}", table
  if config.data.cond != "caption":
    raise SamplingError(
      f"--context={text!r}: captions are text for digit-caption models only; give a .npy file."
    )
  try:
    rows = np.stack([parse_caption(part) for part in text.split(";") if part.strip()])
  except ValueError as e:
    raise SamplingError(f"--context={text!r}: {e}") from None
  return ";".join(caption_text(r) for r in rows), rows


class Conditions:
  """Per-sample conditioning tables of a bulk run; `arrays(index)` gives a batch's rows."""

  def __init__(self):
    self.context: np.ndarray | None = None
    self.x_cond: np.ndarray | None = None
    self.known: np.ndarray | None = None
    self.mask: np.ndarray | None = None
    self.source_labels: np.ndarray | None = None

  @property
  def empty(self) -> bool:
    return all(v is None for v in (self.context, self.x_cond, self.known))

  def arrays(self, index: np.ndarray) -> dict[str, np.ndarray]:
    index = np.asarray(index, np.int64)
    out = {}
    if self.context is not None:
      out["context"] = self.context[index % len(self.context)]
    if self.x_cond is not None:
      out["x_cond"] = self.x_cond[index % len(self.x_cond)]
    if self.known is not None:
      out["inpaint_known"] = self.known[index % len(self.known)]
      out["inpaint_mask"] = self.mask[index % len(self.mask)]
    return out

  def source_labels_of(self, index: np.ndarray) -> np.ndarray | None:
    """The source images' labels (inpainting / conditioning sources that carry them)."""
    if self.source_labels is None:
      return None
    return self.source_labels[np.asarray(index, np.int64) % len(self.source_labels)]


def resolve_conditions(
  config, request: Any = None, *, sampler: str = "ddim", **fields: Any
) -> tuple[dict, Conditions]:
  """(manifest entries, tables) of a run's conditioning beyond labels; SamplingError for bad specs.

  `request`: a `jaxdiff.bulk.SampleRequest` (or any object with its conditioning fields), or those
  fields as keywords: inpaint_source, inpaint_mask, repaint_resample, repaint_jump, paste_known,
  context, cond_source. Manifest entries: "inpaint" (None, or source, mask, their digests,
  repaint_resample, repaint_jump, paste_known), "context" (None or its canonical spec) and
  "cond_source".
  """
  defaults = dict(
    inpaint_source=None, inpaint_mask=None, repaint_resample=1, repaint_jump=1, paste_known=True,
    context=None, cond_source=None,
  )  # fmt: skip
  unknown = sorted(set(fields) - set(defaults))
  if unknown:
    raise TypeError(f"resolve_conditions got unknown keyword(s) {unknown}")
  v = {k: (getattr(request, k) if request is not None else fields.get(k, d)) for k, d in defaults.items()}
  inpaint_source, inpaint_mask, context, cond_source = (
    v["inpaint_source"], v["inpaint_mask"], v["context"], v["cond_source"]
  )  # fmt: skip
  repaint_resample, repaint_jump, paste_known = v["repaint_resample"], v["repaint_jump"], v["paste_known"]
  tables = Conditions()
  takes = Conditioning.from_config(config)
  image = is_image_config(config)
  shape = tuple(data_shape(config))
  entries: dict[str, Any] = {
    "inpaint": _resolve_inpaint(
      tables, image, shape, inpaint_source, inpaint_mask, repaint_resample, repaint_jump, paste_known, sampler
    ),
    "context": _resolve_context(tables, config, takes.context and image, context),
    "cond_source": _resolve_cond_source(
      tables, config, shape, takes.cond_channels if image else 0, cond_source
    ),
  }
  return entries, tables


def _resolve_inpaint(
  tables: Conditions,
  image: bool,
  shape: tuple[int, ...],
  source: str | None,
  mask_spec: str | None,
  repaint_resample: int,
  repaint_jump: int,
  paste_known: bool,
  sampler: str,
) -> dict | None:
  """Inpainting: the images to complete and the mask of what to keep (tables.known, tables.mask)."""
  if source is None and mask_spec is None:
    if repaint_resample != 1 or repaint_jump != 1:
      raise SamplingError(
        "--repaint_resample / --repaint_jump apply to inpainting (--inpaint_source, --inpaint_mask)."
      )
    return None
  if source is None or mask_spec is None:
    raise SamplingError(
      "inpainting needs both --inpaint_source (the images to complete) and --inpaint_mask (what to keep)."
    )
  if not image:
    raise SamplingError("inpainting applies to image models.")
  if sampler not in samplers.INPAINT_SAMPLERS:
    raise SamplingError(f"--sampler={sampler}: inpainting runs with {', '.join(samplers.INPAINT_SAMPLERS)}.")
  for name, v in (("repaint_resample", repaint_resample), ("repaint_jump", repaint_jump)):
    if isinstance(v, bool) or int(v) != v or v < 1:
      raise SamplingError(f"--{name}={v!r} must be an integer >= 1.")
  known, labels, _ = load_source(str(source), shape)
  mask = _load_mask(str(mask_spec), shape)
  if mask.ndim == 3:
    mask = mask[None]
  tables.known, tables.mask, tables.source_labels = known, mask, labels
  return {
    "source": source if source in SOURCES else os.path.abspath(source),
    "source_digest": _digest(known),
    "mask": mask_spec if mask_spec in MASKS else os.path.abspath(mask_spec),
    "mask_digest": _digest(mask),
    "repaint_resample": int(repaint_resample),
    "repaint_jump": int(repaint_jump),
    "paste_known": bool(paste_known),
    "num_source": int(len(known)),
  }


def _resolve_context(tables: Conditions, config, takes_context: bool, spec: str | None) -> str | None:
  """Cross-attention models: the context table (tables.context) and its canonical spec."""
  if not takes_context:
    if spec is not None and str(spec).strip().lower() not in ("none", ""):
      raise SamplingError(
        f"--context={spec!r}, but the model has no cross-attention (config.model.context_dim=0)."
      )
    return None
  if spec is None:
    spec = "uniform" if config.data.cond == "caption" else "none"
  canon, tables.context = _load_context(str(spec), config)
  return canon


def _resolve_cond_source(
  tables: Conditions, config, shape: tuple[int, ...], cond_channels: int, source: str | None
) -> dict | None:
  """Image-conditioned models: the conditioning images (tables.x_cond), made from source images by
  the config's data.cond transform unless the source holds them."""
  if not cond_channels:
    if source is not None:
      raise SamplingError(
        "--cond_source applies to image-conditioned models (config.model.cond_channels > 0)."
      )
    return None
  if source is None:
    if config.data.name != "digits":
      raise SamplingError(
        "this model is conditioned on images (config.model.cond_channels > 0): give "
        "--cond_source (a .npz of source images or of 'x_cond')."
      )
    source = "digits_test"
  x, labels, x_cond = load_source(str(source), shape, "--cond_source")
  if x_cond is None:
    if not config.data.cond:
      raise SamplingError(
        "--cond_source: the config names no data.cond transform to make x_cond from the "
        "images; give a .npz with an 'x_cond' array."
      )
    x_cond = add_conditioning({"x": x, "label": np.zeros(len(x), np.int32)}, config.data)["x_cond"]
  if x_cond.ndim != 4 or tuple(x_cond.shape[1:]) != shape[:2] + (cond_channels,):
    raise SamplingError(
      f"--cond_source={source}: x_cond has shape {list(x_cond.shape)}, the model takes "
      f"{list(shape[:2]) + [cond_channels]}."
    )
  tables.x_cond = np.asarray(x_cond, np.float32)
  if tables.source_labels is None:
    tables.source_labels = labels
  return {
    "source": source if source in SOURCES else os.path.abspath(source),
    "digest": _digest(tables.x_cond),
  }
