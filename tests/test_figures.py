"""2-D scatter views (periodic training plots and sample.py's scatter) ignore a few outliers."""

import numpy as np
from PIL import Image

from jaxdiff import figures


def test_limits_follow_the_reference_range_not_the_outliers():
  ref = np.array([[-1.0, -2.0], [1.0, 2.0], [0.0, 0.0]])
  pts = np.concatenate([np.zeros((300, 2)), [[1e4, -1e4], [np.nan, 0.0]]])
  # square view around the reference's centre, half width = its largest half range (2) x margin
  np.testing.assert_allclose(figures.scatter_limits(pts, ref, margin=1.3), (-2.6, 2.6, -2.6, 2.6))
  assert figures.count_outside(pts, figures.scatter_limits(pts, ref)) == 2  # the outlier and the NaN


def test_limits_without_reference_are_the_central_quantiles():
  rng = np.random.default_rng(0)
  core = rng.uniform(-1.0, 1.0, size=(10_000, 2))
  pts = np.concatenate([core, np.full((20, 2), 1e6)])  # 0.2 % far away: a 300-step toy model's strays
  lo_x, hi_x, lo_y, hi_y = figures.scatter_limits(pts, margin=1.0, coverage=0.99)
  # the 0.5 / 99.5 % quantiles of (almost) U(-1, 1): +-0.99, whatever the outliers' size
  np.testing.assert_allclose([lo_x, hi_x, lo_y, hi_y], [-0.99, 0.99, -0.99, 0.99], atol=0.02)
  naive = np.nanmax(np.abs(pts))
  assert naive / hi_x > 1e5  # what autoscaling would have shown: the core as a single dot


def test_limits_of_degenerate_inputs():
  assert figures.scatter_limits(np.full((4, 2), np.nan)) is None
  np.testing.assert_allclose(
    figures.scatter_limits(np.ones((3, 2)), margin=1.0), (0.999, 1.001, 0.999, 1.001)
  )


def test_save_points_draws_the_core_in_view(tmp_path):
  rng = np.random.default_rng(1)
  pts = np.concatenate([rng.normal(0.0, 0.5, size=(500, 2)), [[500.0, 500.0]]])
  path = figures.save_points(pts, str(tmp_path / "s.png"), "toy2d/s_curve", "test")
  img = np.asarray(Image.open(path).convert("RGB")).astype(int)
  red = (img[..., 0] > 180) & (img[..., 1] < 120) & (img[..., 2] < 120)  # the samples' colour
  assert red.sum() > 500  # hundreds of visible points, not one dot
