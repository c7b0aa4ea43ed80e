"""jaxdiff.fileio: every file jaxdiff writes is replaced whole or not at all."""

import os

import pytest

from jaxdiff import fileio


def test_write_creates_folder_and_replaces_whole(tmp_path):
  path = tmp_path / "new" / "a.json"
  fileio.atomic_write_text(str(path), "one")
  fileio.atomic_write_bytes(str(path), b"two")
  assert path.read_bytes() == b"two"
  assert os.listdir(path.parent) == ["a.json"]


def test_failed_write_keeps_old_file_and_no_temporary(tmp_path):
  path = tmp_path / "a.npz"
  fileio.atomic_write_bytes(str(path), b"old")

  def half_then_fail(f):
    f.write(b"half")
    raise OSError("disk full")

  with pytest.raises(OSError, match="disk full"):
    fileio.atomic_write(str(path), half_then_fail, tmp_name=".a.npz.p3.tmp")
  assert path.read_bytes() == b"old"
  assert os.listdir(tmp_path) == ["a.npz"]


def test_named_temporary_is_used(tmp_path):
  seen = []
  fileio.atomic_write(
    str(tmp_path / "s.npz"), lambda f: seen.append(os.path.basename(f.name)), tmp_name=".s.npz.p1.tmp"
  )
  assert seen == [".s.npz.p1.tmp"]
