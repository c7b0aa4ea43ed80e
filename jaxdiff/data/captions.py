"""Short captions of the 8x8 digits, a context for cross-attention conditioning.

A caption is three tokens: the digit's class, its stroke weight and its slant,

    [class 0-9, "thin" | "thick", "slanted-left" | "upright" | "slanted-right"]

e.g. "3 thick slanted-right" = [3, 11, 14]. The class comes from the label; the two attributes
are measured on the image, relative to the digit's class (a thick 1 and a thick 8 are thick for
a 1 and for an 8), with thresholds fixed once from the digits *train* split:

- stroke weight ("ink"): the mean pixel intensity in [0, 1]; "thick" above the class's median;
- slant: the shear of the ink, -cov(row, col) / var(row) over the ink distribution (column
  shift per row going up; > 0 leans right like "/"), split at the class's tertiles.

So every attribute value is about equally common within each class and the attributes are not
stand-ins for the class. Tokens are ids into `VOCAB` (15 entries); a model embeds them with a
learned table (`config.model.context_vocab = len(VOCAB)`). The tokens' slots have disjoint ids,
so their order carries no information the model needs.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Sequence

import numpy as np

from jaxdiff.data.embedded import load_digits_split
from jaxdiff.errors import DataError

__all__ = [
  "VOCAB",
  "CAPTION_LENGTH",
  "THICKNESS",
  "SLANTS",
  "ink",
  "slant",
  "thresholds",
  "attributes",
  "caption_tokens",
  "parse_caption",
  "caption_text",
  "all_captions",
  "THICK_TOKEN0",
  "SLANT_TOKEN0",
]

THICKNESS = ("thin", "thick")
SLANTS = ("slanted-left", "upright", "slanted-right")
VOCAB = tuple(str(c) for c in range(10)) + THICKNESS + SLANTS
CAPTION_LENGTH = 3
THICK_TOKEN0 = 10  # id of "thin"; "thick" is 11
SLANT_TOKEN0 = 12  # id of "slanted-left"; "upright" 13, "slanted-right" 14


def _ink_weights(x: np.ndarray) -> np.ndarray:
  """Ink per pixel in [0, 1] from images in [-1, 1], [N, 8, 8] (channel dropped)."""
  x = np.asarray(x, np.float64)
  if x.ndim == 4:
    x = x[..., 0]
  if x.ndim != 3:
    raise DataError(f"expected images [N, H, W, 1] or [N, H, W], got shape {x.shape}")
  return np.clip((x + 1.0) / 2.0, 0.0, 1.0)


def ink(x: np.ndarray) -> np.ndarray:
  """Stroke weight: mean ink per pixel, [N] in [0, 1]."""
  return _ink_weights(x).mean(axis=(1, 2))


def slant(x: np.ndarray) -> np.ndarray:
  """Shear of the ink, -cov(row, col) / var(row) under the ink distribution, [N].

  Rows grow downwards, so a stroke like "/" (column falls as the row grows) has cov < 0 and a
  positive slant: it leans right. An image without ink has slant 0.
  """
  w = _ink_weights(x)
  h, wd = w.shape[1:]
  rows, cols = np.meshgrid(np.arange(h, dtype=np.float64), np.arange(wd, dtype=np.float64), indexing="ij")
  mass = np.maximum(w.sum(axis=(1, 2)), 1e-9)
  mr = (w * rows).sum(axis=(1, 2)) / mass
  mc = (w * cols).sum(axis=(1, 2)) / mass
  dr, dc = rows[None] - mr[:, None, None], cols[None] - mc[:, None, None]
  cov = (w * dr * dc).sum(axis=(1, 2)) / mass
  var = np.maximum((w * dr * dr).sum(axis=(1, 2)) / mass, 1e-9)
  return -cov / var


@functools.lru_cache(maxsize=1)
def thresholds() -> tuple[np.ndarray, np.ndarray]:
  """(ink median [10], slant tertiles [10, 2]) per class, from the digits train split."""

  x, y = load_digits_split("train")
  k, s = ink(x), slant(x)
  med = np.array([np.median(k[y == c]) for c in range(10)])
  ter = np.array([np.quantile(s[y == c], [1 / 3, 2 / 3]) for c in range(10)])
  med.flags.writeable = False
  ter.flags.writeable = False
  return med, ter


def attributes(x: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(thick 0/1, slant bin 0/1/2) of images read as digits of class `labels`."""
  labels = np.asarray(labels, np.int64)
  if labels.min(initial=0) < 0 or labels.max(initial=0) > 9:
    raise DataError("caption labels must be digit classes 0-9")
  med, ter = thresholds()
  thick = (ink(x) > med[labels]).astype(np.int32)
  s = slant(x)
  bins = (s > ter[labels, 0]).astype(np.int32) + (s > ter[labels, 1]).astype(np.int32)
  return thick, bins


def caption_tokens(x: np.ndarray, labels: np.ndarray) -> np.ndarray:
  """int32 [N, 3] captions [class, thickness, slant] of digits `x` with classes `labels`."""
  thick, bins = attributes(x, labels)
  return np.stack([np.asarray(labels, np.int32), THICK_TOKEN0 + thick, SLANT_TOKEN0 + bins], axis=1).astype(
    np.int32
  )


def parse_caption(text: str) -> np.ndarray:
  """ "3 thick slanted-right" -> int32 [3]: a class and one word of each attribute, any order;
  a missing attribute is padding (-1), which the model leaves out of attention."""
  words = text.replace(",", " ").split()
  out = np.full(CAPTION_LENGTH, -1, np.int32)
  for w in words:
    w = w.lower()
    if w not in VOCAB:
      raise DataError(f"caption word {w!r} is not in the vocabulary {list(VOCAB)}")
    tok = VOCAB.index(w)
    slot = 0 if tok < THICK_TOKEN0 else 1 if tok < SLANT_TOKEN0 else 2
    if out[slot] >= 0:
      raise DataError(f"caption {text!r} names two values for the same slot ({VOCAB[out[slot]]!r}, {w!r})")
    out[slot] = tok
  if (out < 0).all():
    raise DataError(f"caption {text!r} holds no word; e.g. '3 thick slanted-right'")
  return out


def caption_text(tokens: Sequence[int]) -> str:
  return " ".join(VOCAB[int(t)] for t in tokens if int(t) >= 0)


def all_captions() -> np.ndarray:
  """Every full caption, int32 [60, 3], class-major: class c's six are rows 6c .. 6c + 5."""
  rows = [
    (c, THICK_TOKEN0 + t, SLANT_TOKEN0 + s) for c, t, s in itertools.product(range(10), range(2), range(3))
  ]
  return np.asarray(rows, np.int32)
