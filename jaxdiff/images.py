"""Image output: [-1, 1] floats to uint8, sample grids, atomic PNG files and 2-D scatter plots.

Everything here runs on the host with numpy (and Pillow / matplotlib); pass jax arrays freely,
they are converted with `np.asarray`. Files are written to a temporary file in the target
folder and moved into place with `os.replace`, so a reader (TensorBoard, a person, a crashed
and restarted job) never sees half a PNG and an existing file is never left damaged.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image

from jaxdiff.errors import ArgumentError
from jaxdiff.fileio import atomic_write

__all__ = [
  "to_uint8",
  "make_grid",
  "upscale_nearest",
  "save_png",
  "save_image_grid",
  "save_scatter",
]


def to_uint8(images: Any) -> np.ndarray:
  """Maps floats in [-1, 1] to uint8 in [0, 255] (round to nearest, clip); uint8 passes through.

  -1 -> 0, 0 -> 128, 1 -> 255. NaN becomes 0 (black) rather than an arbitrary cast value, so a
  diverged model shows as black tiles instead of noise.
  """
  arr = np.asarray(images)
  if arr.dtype == np.uint8:
    return arr
  if arr.dtype == np.bool_ or not (
    np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)
  ):
    raise TypeError(f"to_uint8 expects float images in [-1, 1] or uint8, got dtype {arr.dtype}")
  arr = np.nan_to_num(arr.astype(np.float64), nan=-1.0, posinf=1.0, neginf=-1.0)
  return np.clip(np.round((arr + 1.0) * 127.5), 0, 255).astype(np.uint8)


def _as_nhwc(images: Any) -> np.ndarray:
  """uint8 [N, H, W, C] with C in {1, 3, 4}; a 3-D input is read as grayscale [N, H, W]."""
  arr = to_uint8(images)
  if arr.ndim == 3:
    arr = arr[..., None]
  if arr.ndim != 4:
    raise ArgumentError(f"expected images as [N, H, W, C] (or [N, H, W] grayscale), got shape {arr.shape}")
  if arr.shape[-1] not in (1, 3, 4):
    raise ArgumentError(f"expected 1 (grayscale), 3 (RGB) or 4 (RGBA) channels, got shape {arr.shape}")
  if arr.shape[0] == 0:
    raise ArgumentError("cannot make a grid of zero images")
  return arr


def make_grid(images: Any, nrow: int | None = None, padding: int = 1, pad_value: int = 255) -> np.ndarray:
  """Tiles images into one uint8 [H', W', C] array, `nrow` images per row (default: about square).

  images: NHWC (or NHW) floats in [-1, 1] or uint8. Cells are separated (and surrounded) by
  `padding` pixels of `pad_value`; unused cells of the last row are filled with `pad_value`.
  H' = rows * (H + padding) + padding, W' = nrow * (W + padding) + padding.
  """
  arr = _as_nhwc(images)
  n, h, w, c = arr.shape
  if nrow is None:
    nrow = int(math.ceil(math.sqrt(n)))
  if nrow < 1:
    raise ArgumentError(f"nrow must be >= 1, got {nrow}")
  if padding < 0:
    raise ArgumentError(f"padding must be >= 0, got {padding}")
  nrow = min(nrow, n)
  rows = int(math.ceil(n / nrow))
  grid = np.full(
    (rows * (h + padding) + padding, nrow * (w + padding) + padding, c), pad_value, dtype=np.uint8
  )
  for k in range(n):
    r, col = divmod(k, nrow)
    top, left = padding + r * (h + padding), padding + col * (w + padding)
    grid[top : top + h, left : left + w] = arr[k]
  return grid


def upscale_nearest(images: Any, factor: int) -> np.ndarray:
  """Enlarges NHWC (or NHW) images by an integer factor with nearest neighbour (pixel blocks)."""
  if factor < 1:
    raise ArgumentError(f"upscale factor must be >= 1, got {factor}")
  arr = _as_nhwc(images)
  if factor == 1:
    return arr
  return np.repeat(np.repeat(arr, factor, axis=1), factor, axis=2)


def save_png(array: Any, path: str) -> str:
  """Writes one image ([H, W], [H, W, 1|3|4]; uint8 or floats in [-1, 1]) as a PNG, atomically."""

  arr = to_uint8(array)
  if arr.ndim == 3 and arr.shape[-1] == 1:
    arr = arr[..., 0]
  if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[-1] not in (3, 4)):
    raise ArgumentError(f"save_png expects [H, W] or [H, W, 1|3|4], got shape {arr.shape}")
  image = Image.fromarray(np.ascontiguousarray(arr))
  return atomic_write(path, lambda f: image.save(f, format="PNG"))


def save_image_grid(
  images: Any,
  path: str,
  nrow: int | None = None,
  upscale: int | None = None,
  padding: int = 4,
  pad_value: int = 128,
) -> np.ndarray:
  """Saves a grid of NHWC images as a PNG and returns the uint8 grid.

  Cells are separated by `padding` pixels of mid-grey: digits touch their top and bottom edges,
  and a thin white line would merge neighbouring rows into one stroke.

  upscale: integer nearest-neighbour factor applied to each image before tiling; None picks
  the smallest factor that makes an image at least 64 pixels tall (8x8 digits -> x8,
  28x28 -> x3, 32x32 -> x2, >= 64 -> x1), so tiny images are visible to a person.
  """
  arr = _as_nhwc(images)
  if upscale is None:
    upscale = max(1, int(math.ceil(64 / arr.shape[1])))
  grid = make_grid(upscale_nearest(arr, upscale), nrow=nrow, padding=padding, pad_value=pad_value)
  save_png(grid, path)
  return grid


def save_scatter(
  points: Any,
  path: str,
  labels: Any | None = None,
  reference: Any | None = None,
  title: str | None = None,
  limits: Sequence[float] | None = None,
) -> str:
  """Scatter plot of 2-D points as a PNG (matplotlib Agg, no global backend change), atomically.

  labels: optional int per point (coloured with a qualitative colour map); reference: optional
  [M, 2] points drawn in light grey underneath (e.g. fresh draws of the true distribution);
  limits: (xmin, xmax, ymin, ymax), default: fitted to all points with a margin, equal aspect.
  """
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure

  pts = np.asarray(points, dtype=np.float64)
  if pts.ndim != 2 or pts.shape[1] != 2:
    raise ArgumentError(f"save_scatter expects points of shape [N, 2], got {pts.shape}")
  ref = None if reference is None else np.asarray(reference, dtype=np.float64)
  if ref is not None and (ref.ndim != 2 or ref.shape[1] != 2):
    raise ArgumentError(f"reference must have shape [M, 2], got {ref.shape}")

  fig = Figure(figsize=(5, 5), dpi=100)
  FigureCanvasAgg(fig)
  ax = fig.add_subplot(1, 1, 1)
  size = float(np.clip(2000.0 / max(len(pts), 1), 1.0, 20.0))
  if ref is not None:
    ax.scatter(ref[:, 0], ref[:, 1], s=size, c="0.8", linewidths=0, label="reference")
  if labels is not None:
    lab = np.asarray(labels).reshape(-1)
    if lab.shape[0] != pts.shape[0]:
      raise ArgumentError(f"{lab.shape[0]} labels for {pts.shape[0]} points")
    ax.scatter(pts[:, 0], pts[:, 1], s=size, c=lab, cmap="tab10", vmin=0, vmax=9, linewidths=0)
  else:
    ax.scatter(pts[:, 0], pts[:, 1], s=size, c="tab:red", linewidths=0)
  if limits is None:
    every = pts if ref is None else np.concatenate([pts, ref])
    finite = every[np.all(np.isfinite(every), axis=1)]
    if len(finite):
      lo, hi = finite.min(axis=0), finite.max(axis=0)
      centre, half = (lo + hi) / 2, max(float((hi - lo).max()) / 2, 1e-3) * 1.08
      limits = (centre[0] - half, centre[0] + half, centre[1] - half, centre[1] + half)
  if limits is not None:
    ax.set_xlim(limits[0], limits[1])
    ax.set_ylim(limits[2], limits[3])
  ax.set_aspect("equal")
  ax.grid(True, linewidth=0.3, alpha=0.5)
  if title:
    ax.set_title(title)
  fig.tight_layout()
  return atomic_write(path, lambda f: fig.savefig(f, format="png"))
