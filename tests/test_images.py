"""Tests for jaxdiff.images: uint8 conversion, grids, nearest upscaling, atomic PNG and scatter files."""

import os

import numpy as np
import pytest
from PIL import Image

from jaxdiff import images


def test_to_uint8_closed_form():
  x = np.array([-1.0, -0.5, 0.0, 0.5, 1.0, -3.0, 7.0, np.nan], dtype=np.float32)
  # (x + 1) * 127.5 rounded: 0, 63.75 -> 64, 127.5 -> 128, 191.25 -> 191, 255; clipped; NaN -> 0.
  np.testing.assert_array_equal(images.to_uint8(x), [0, 64, 128, 191, 255, 0, 255, 0])
  assert images.to_uint8(x).dtype == np.uint8
  u = np.arange(256, dtype=np.uint8)
  assert images.to_uint8(u) is u
  # Round trip of the 256 levels through [-1, 1].
  np.testing.assert_array_equal(images.to_uint8(u.astype(np.float32) / 127.5 - 1.0), u)
  with pytest.raises(TypeError):
    images.to_uint8(np.array(["a"]))


def test_make_grid_layout_and_padding():
  rng = np.random.default_rng(0)
  imgs = rng.integers(0, 256, size=(5, 3, 4, 3), dtype=np.uint8)
  grid = images.make_grid(imgs, nrow=2, padding=1, pad_value=255)
  assert grid.shape == (3 * (3 + 1) + 1, 2 * (4 + 1) + 1, 3) and grid.dtype == np.uint8
  for k in range(5):
    r, c = divmod(k, 2)
    top, left = 1 + r * 4, 1 + c * 5
    np.testing.assert_array_equal(grid[top : top + 3, left : left + 4], imgs[k])
  assert (grid[0] == 255).all() and (grid[:, 0] == 255).all() and (grid[4] == 255).all()
  assert (grid[9:12, 6:10] == 255).all()  # the unused sixth cell
  # Default nrow: about square (ceil(sqrt(5)) = 3 per row); grayscale NHW and floats accepted.
  gray = images.make_grid(np.zeros((5, 2, 2), np.float32), padding=0)
  assert gray.shape == (4, 6, 1) and (gray[:2] == 128).all() and (gray[2:, 4:] == 255).all()
  with pytest.raises(ValueError):
    images.make_grid(np.zeros((2, 3, 3, 2)))
  with pytest.raises(ValueError):
    images.make_grid(np.zeros((0, 3, 3, 1)))


def test_upscale_nearest_blocks():
  img = np.arange(4, dtype=np.uint8).reshape(1, 2, 2, 1)
  up = images.upscale_nearest(img, 3)
  assert up.shape == (1, 6, 6, 1)
  np.testing.assert_array_equal(up[0, :, :, 0], np.kron(img[0, :, :, 0], np.ones((3, 3), np.uint8)))


def test_save_png_round_trip_and_atomic(tmp_path):
  rgb = np.random.default_rng(1).integers(0, 256, size=(7, 9, 3), dtype=np.uint8)
  path = tmp_path / "sub" / "a.png"
  images.save_png(rgb, str(path))
  np.testing.assert_array_equal(np.asarray(Image.open(path)), rgb)
  gray = np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4, 1)
  images.save_png(gray, str(path))  # replaces the file
  loaded = np.asarray(Image.open(path))
  assert loaded.shape == (3, 4)
  np.testing.assert_array_equal(loaded, images.to_uint8(gray)[..., 0])
  with pytest.raises(ValueError):
    images.save_png(np.zeros((2, 2, 2), np.uint8), str(path))  # bad shape: old file kept
  np.testing.assert_array_equal(np.asarray(Image.open(path)), loaded)
  assert sorted(os.listdir(path.parent)) == ["a.png"]  # no temporary files left behind


def test_save_png_failure_keeps_old_file(tmp_path, monkeypatch):
  path = tmp_path / "b.png"
  images.save_png(np.full((2, 2), 7, np.uint8), str(path))

  def broken_save(self, fp, *args, **kwargs):  # writes part of the file, then fails
    if hasattr(fp, "write"):
      fp.write(b"half a png")
    else:
      with open(fp, "wb") as f:
        f.write(b"half a png")
    raise OSError("disk full")

  monkeypatch.setattr(Image.Image, "save", broken_save)
  with pytest.raises(OSError):
    images.save_png(np.zeros((2, 2), np.uint8), str(path))
  monkeypatch.undo()
  np.testing.assert_array_equal(np.asarray(Image.open(path)), np.full((2, 2), 7, np.uint8))
  assert os.listdir(tmp_path) == ["b.png"]


def test_save_image_grid_upscales_tiny_images(tmp_path):
  digits = np.random.default_rng(2).uniform(-1, 1, size=(4, 8, 8, 1)).astype(np.float32)
  grid = images.save_image_grid(digits, str(tmp_path / "g.png"))  # 8 px -> x8 = 64 px
  assert grid.shape == (2 * 68 + 4, 2 * 68 + 4, 1)  # 4 px grey separators
  assert grid[0, 0, 0] == 128
  loaded = np.asarray(Image.open(tmp_path / "g.png"))
  np.testing.assert_array_equal(loaded, grid[..., 0])
  # The third image (row 1, col 0) is its 8x8 pixels as 8x8 blocks.
  cell = loaded[72:136, 4:68]
  np.testing.assert_array_equal(cell, np.kron(images.to_uint8(digits[2, :, :, 0]), np.ones((8, 8), np.uint8)))
  big = images.save_image_grid(np.zeros((2, 64, 64, 3), np.uint8), str(tmp_path / "b.png"), nrow=2)
  assert big.shape == (72, 140, 3)


def test_save_scatter_png(tmp_path):
  rng = np.random.default_rng(3)
  pts = rng.normal(size=(300, 2))
  path = images.save_scatter(
    pts,
    str(tmp_path / "s.png"),
    labels=rng.integers(0, 3, 300),
    reference=rng.normal(size=(500, 2)),
    title="test",
  )
  img = np.asarray(Image.open(path).convert("RGB"))
  assert img.shape == (500, 500, 3)
  assert (img.std(axis=(0, 1)) > 5).all()  # something was drawn
  assert os.listdir(tmp_path) == ["s.png"]
  with pytest.raises(ValueError):
    images.save_scatter(np.zeros((3, 3)), str(tmp_path / "t.png"))
  with pytest.raises(ValueError):
    images.save_scatter(pts, str(tmp_path / "t.png"), labels=np.zeros(5))
  assert not (tmp_path / "t.png").exists()
