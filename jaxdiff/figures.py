"""Pictures of a sample run: the grid of the first samples, the 2-D scatter, the reverse process.

All files are written atomically (jaxdiff.images), with matplotlib's Agg canvas (no global
backend change).
"""

from __future__ import annotations

import io

import numpy as np

from jaxdiff import images
from jaxdiff.data import sample_toy2d
from jaxdiff.fileio import atomic_write_bytes

__all__ = ["grid_order", "save_grid", "save_points", "save_trajectory", "scatter_limits", "count_outside"]


def grid_order(
  labels: np.ndarray, num_classes: int, uniform: bool, limit: int
) -> tuple[np.ndarray, int | None]:
  """(positions of the samples to show, images per row) for the first `limit` samples.

  With balanced labels (sample i has class i % C) and at least C samples, one row per class,
  k = limit // C samples each; otherwise the first samples in order, about square.
  """
  n = min(len(labels), limit)
  if uniform and num_classes > 1 and n >= num_classes:
    k = n // num_classes
    take = np.arange(k * num_classes)
    return take[np.argsort(labels[take], kind="stable")], k
  return np.arange(n), None


def save_grid(
  x: np.ndarray, labels: np.ndarray, path: str, num_classes: int, uniform: bool, limit: int = 100
) -> str:
  order, nrow = grid_order(labels, num_classes, uniform, limit)
  images.save_image_grid(x[order], path, nrow=nrow)
  return path


def scatter_limits(
  points: np.ndarray, reference: np.ndarray | None = None, margin: float = 1.3, coverage: float = 0.99
) -> tuple[float, float, float, float] | None:
  """(xmin, xmax, ymin, ymax) of a square view that a few outliers cannot blow up.

  Fitted to the reference data's range when there is one (fresh draws of the true distribution),
  else to the central `coverage` share of the finite samples (per axis quantiles), widened by
  `margin` around the centre. None when there is nothing finite to fit.
  """
  basis = np.asarray(points if reference is None else reference, np.float64)[:, :2]
  basis = basis[np.all(np.isfinite(basis), axis=1)]
  if not len(basis):
    return None
  if reference is not None:
    lo, hi = basis.min(axis=0), basis.max(axis=0)
  else:
    tail = 100.0 * (1.0 - coverage) / 2
    lo, hi = np.percentile(basis, tail, axis=0), np.percentile(basis, 100.0 - tail, axis=0)
  centre, half = (lo + hi) / 2, max(float((hi - lo).max()) / 2, 1e-3) * margin
  return (centre[0] - half, centre[0] + half, centre[1] - half, centre[1] + half)


def count_outside(points: np.ndarray, limits: tuple[float, float, float, float]) -> int:
  """How many points (non-finite ones included) fall outside `limits`."""
  pts = np.asarray(points, np.float64)[:, :2]
  x0, x1, y0, y1 = limits
  inside = (pts[:, 0] >= x0) & (pts[:, 0] <= x1) & (pts[:, 1] >= y0) & (pts[:, 1] <= y1)
  return int(np.sum(~inside))


def save_points(points: np.ndarray, path: str, data_name: str, title: str) -> str:
  """Scatter of the samples over fresh draws of the true distribution (for toy2d data).

  The view is `scatter_limits`: fitted to the reference data (else to the central 99% of the
  samples) with a margin, so a few far-away samples of a poorly trained model do not shrink the
  picture to a dot; how many fall outside is said in the title. The training run's periodic
  scatter plots and sample.py's both come through here.
  """
  pts = np.asarray(points, np.float64)[:, :2]
  reference = None
  if data_name.startswith("toy2d/"):
    reference = np.asarray(sample_toy2d(data_name.split("/", 1)[1], min(max(len(pts), 1000), 5000), 0))
  limits = scatter_limits(pts, reference)
  if limits is not None:
    outside = count_outside(pts, limits)
    if outside:
      title = f"{title} ({outside} outside the view)"
  images.save_scatter(pts, path, reference=reference, title=title, limits=limits)
  return path


def _pick_columns(num_states: int, count: int) -> np.ndarray:
  """`count` indices spread over 0..num_states - 1, always including the first and the last."""
  return np.unique(np.round(np.linspace(0, num_states - 1, min(count, num_states))).astype(int))


def time_label(t: float) -> str:
  """A model time as a column title: whole timesteps as integers ("t=999"), continuous times and
  noise levels with four significant digits ("t=0.4321", "t=80")."""
  t = float(t)
  return f"t={int(t)}" if t == round(t) and abs(t) < 1e7 else f"t={t:.4g}"


def _column_titles(ts: np.ndarray, cols: np.ndarray) -> list[str]:
  return [time_label(ts[c]) if c < len(ts) else "x0 (final)" for c in cols]


def save_trajectory(
  traj_x: np.ndarray, traj_x0: np.ndarray, ts: np.ndarray, path: str, kind: str, title: str, columns: int = 8
) -> str:
  """The reverse process of a few samples at `columns` timesteps.

  traj_x: [n, S + 1, ...] x_t before each of the S steps plus the final sample; traj_x0: [n, S, ...]
  the predicted x0 at each step; ts: [S] the timesteps. Images: two rows per sample (x_t clipped to
  [-1, 1], predicted x0), one column per chosen timestep. Points: one scatter per timestep.
  """
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure

  num_states = traj_x.shape[1]
  picks = _pick_columns(num_states, columns)
  titles = _column_titles(ts, picks)
  if kind == "points":
    fig = Figure(figsize=(2.6 * len(picks), 2.9), dpi=100)
    FigureCanvasAgg(fig)
    every = traj_x[:, picks].reshape(-1, traj_x.shape[-1])
    finite = every[np.all(np.isfinite(every), axis=1)]
    lim = float(np.percentile(np.abs(finite), 99.5)) * 1.1 if len(finite) else 3.0
    for j, (c, name) in enumerate(zip(picks, titles)):
      ax = fig.add_subplot(1, len(picks), j + 1)
      pts = traj_x[:, c]
      ax.scatter(pts[:, 0], pts[:, 1], s=2, c="tab:blue", linewidths=0)
      ax.set_xlim(-lim, lim)
      ax.set_ylim(-lim, lim)
      ax.set_aspect("equal")
      ax.set_xticks([])
      ax.set_yticks([])
      ax.set_title(name, fontsize=9)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
  else:
    n = traj_x.shape[0]
    x0_full = np.concatenate([traj_x0, traj_x[:, -1:]], axis=1)  # the final sample is its own x0
    rows = []
    for i in range(n):
      rows.append(np.clip(traj_x[i, picks], -1.0, 1.0))
      rows.append(np.clip(x0_full[i, picks], -1.0, 1.0))
    tiles = np.concatenate(rows, axis=0)
    h = tiles.shape[1]
    factor = max(1, int(np.ceil(64 / h)))
    pad = 2
    grid = images.make_grid(images.upscale_nearest(tiles, factor), nrow=len(picks), padding=pad)
    cell = h * factor + pad
    fig = Figure(figsize=(max(4.0, grid.shape[1] / 80 + 1.6), grid.shape[0] / 80 + 0.9), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.imshow(
      grid.squeeze(-1) if grid.shape[-1] == 1 else grid,
      cmap="gray",
      vmin=0,
      vmax=255,
      interpolation="nearest",
    )
    ax.set_xticks([pad + cell * j + cell / 2 - pad / 2 for j in range(len(picks))])
    ax.set_xticklabels(titles, fontsize=8)
    ax.xaxis.tick_top()
    ax.set_yticks([pad + cell * r + cell / 2 - pad / 2 for r in range(2 * n)])
    ax.set_yticklabels(
      [f"#{i // 2} " + ("x_t" if i % 2 == 0 else "x0 pred") for i in range(2 * n)], fontsize=8
    )
    ax.set_title(title, fontsize=10, pad=18)
    fig.tight_layout()
  buf = io.BytesIO()
  fig.savefig(buf, format="png")
  return atomic_write_bytes(path, buf.getvalue())
