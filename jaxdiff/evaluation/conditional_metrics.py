"""Measures of conditional generation against its inputs: super-resolution errors (against the
bicubic baseline), class agreement of completions (inpainting) and caption agreement.

Each figure comes with the same figure for a reference (bicubic upsampling, the real held-out
images), as the rest of jaxdiff.evaluation does.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from jaxdiff.data.captions import SLANT_TOKEN0, THICK_TOKEN0, attributes
from jaxdiff.data.derived_inputs import downsample
from jaxdiff.errors import DataError
from jaxdiff.evaluation.digits_judge import DigitsJudge

__all__ = ["psnr", "super_resolution_errors", "label_agreement", "caption_agreement"]


def psnr(mse: Any, data_range: float = 2.0) -> np.ndarray:
  """Peak signal-to-noise ratio in dB of a mean squared error, for images spanning data_range
  (2 for images in [-1, 1]): 10 log10(range^2 / mse)."""
  return 10.0 * np.log10(data_range**2 / np.maximum(np.asarray(mse, np.float64), 1e-20))


def _per_image_mse(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return ((a - b) ** 2).reshape(len(a), -1).mean(axis=1)


def super_resolution_errors(
  samples: Any, truth: Any, bicubic: Any, low: Any | None = None, factor: int = 2
) -> dict[str, Any]:
  """Errors of super-resolved images against the ground truth, beside bicubic upsampling.

  samples: [N, H, W, C] or [K, N, H, W, C] (K samples per input; the mean of the K samples, an
  estimate of the posterior mean, is scored too). truth, bicubic: [N, H, W, C] in [-1, 1].
  low: the low-resolution inputs [N, H/f, W/f, C]: adds the consistency error, the MSE between
  the area-downsampled sample and the input it was conditioned on.
  Returns {"mse": {...}, "psnr": {...}, "win_rate": share of images a sample beats bicubic on,
  "per_image": {"bicubic": [N], "sample": [N]}, ...}; PSNR of the mean MSE over the set.
  """
  s = np.asarray(samples, np.float64)
  if s.ndim == 4:
    s = s[None]
  truth = np.asarray(truth, np.float64)
  bicubic = np.asarray(bicubic, np.float64)
  per_bicubic = _per_image_mse(bicubic, truth)
  per_sample = np.stack([_per_image_mse(x, truth) for x in s])  # [K, N]
  mse = {"bicubic": float(per_bicubic.mean()), "sample": float(per_sample.mean())}
  if len(s) > 1:
    mse[f"mean_of_{len(s)}_samples"] = float(_per_image_mse(s.mean(axis=0), truth).mean())
  out: dict[str, Any] = {
    "mse": mse,
    "psnr": {k: float(psnr(v)) for k, v in mse.items()},
    "win_rate": float((per_sample < per_bicubic[None]).mean()),
    "per_image": {"bicubic": per_bicubic, "sample": per_sample[0]},
    "n": int(truth.shape[0]),
    "samples_per_input": int(len(s)),
  }
  if low is not None:
    low = np.asarray(low, np.float64)
    out["consistency_mse"] = {
      "sample": float(np.mean([_per_image_mse(downsample(x, factor), low).mean() for x in s])),
      "bicubic": float(_per_image_mse(downsample(bicubic, factor), low).mean()),
      "truth": float(_per_image_mse(downsample(truth, factor), low).mean()),
    }
  return out


def label_agreement(images: Any, labels: Any, judge=None) -> float:
  """Share of digit images whose class, as the digits judge reads it, is `labels` (e.g. the
  label of the source an inpainted digit was completed from)."""
  if judge is None:
    judge = DigitsJudge.load()
  pred = np.asarray(judge.predict(images))
  return float(np.mean(pred == np.asarray(labels)))


def caption_agreement(images: Any, tokens: Any, judge=None) -> dict[str, float]:
  """How well digits follow their captions (`jaxdiff.data.captions`): the share whose judged class
  (digits judge), stroke weight and slant bin match the caption (slots that are padding are
  skipped), plus all three."""
  tokens = np.asarray(tokens, np.int64)
  if judge is None:
    judge = DigitsJudge.load()
  x = np.asarray(images, np.float32)
  cls = tokens[:, 0]
  if (cls < 0).any():
    raise DataError("caption_agreement needs the class slot of every caption")
  thick, bins = attributes(x, cls)
  pred = np.asarray(judge.predict(x))
  ok_class = pred == cls
  has_t, has_s = tokens[:, 1] >= 0, tokens[:, 2] >= 0
  ok_thick = np.where(has_t, thick == tokens[:, 1] - THICK_TOKEN0, True)
  ok_slant = np.where(has_s, bins == tokens[:, 2] - SLANT_TOKEN0, True)
  return {
    "class": float(ok_class.mean()),
    "thickness": float(ok_thick[has_t].mean()) if has_t.any() else float("nan"),
    "slant": float(ok_slant[has_s].mean()) if has_s.any() else float("nan"),
    "all": float((ok_class & ok_thick & ok_slant).mean()),
    "n": int(len(x)),
  }
