"""Workdirs and outputs in a bucket: jaxdiff.fileio on local paths and on a non-local backend (fsspec's
in-memory file system, `memory://`, standing in for gs://), and a training run whose workdir and
sample output live there: it trains, resumes, samples and is evaluated."""

import os
import uuid

import numpy as np
import pytest

from jaxdiff import fileio


@pytest.fixture(params=["local", "memory"])
def root(request, tmp_path):
  """A fresh folder on each backend (URLs for the in-memory store)."""
  if request.param == "local":
    yield str(tmp_path / "root")
    return
  url = f"memory://jaxdiff-test-{uuid.uuid4().hex[:8]}/root"
  yield url
  fileio.rmtree(url)


def test_urls_and_local_paths_are_told_apart():
  assert fileio.is_url("gs://bucket/run") and fileio.is_url("memory://x") and fileio.is_url("s3://b/k")
  assert (
    not fileio.is_url("runs/toy2d") and not fileio.is_url("/abs/path") and not fileio.is_url("file:///tmp/x")
  )
  assert fileio.abspath("gs://bucket/run/") == "gs://bucket/run"  # os.path.abspath would give /cwd/gs:/...
  assert fileio.join("gs://bucket", "run", "config.json") == "gs://bucket/run/config.json"
  assert fileio.abspath("file:///tmp/x") == "/tmp/x"


def test_write_read_list_and_replace_whole(root):
  path = fileio.join(root, "sub", "a.json")
  fileio.atomic_write_text(path, "one")
  fileio.atomic_write_bytes(path, b"two two")
  assert fileio.read_bytes(path) == b"two two" and fileio.getsize(path) == 7
  assert fileio.listdir(fileio.join(root, "sub")) == ["a.json"]  # no temporary left behind
  assert fileio.isdir(fileio.join(root, "sub")) and fileio.isfile(path) and not fileio.isdir(path)
  fileio.atomic_write(fileio.join(root, "s.npz"), lambda f: np.savez(f, x=np.arange(5)))
  with fileio.open(fileio.join(root, "s.npz"), "rb") as f:
    np.testing.assert_array_equal(np.load(f)["x"], np.arange(5))
  assert fileio.glob(root, "*.npz") == [fileio.join(root, "s.npz")]
  walked = {r: sorted(f) for r, _, f in fileio.walk(root)}
  assert walked == {root: ["s.npz"], fileio.join(root, "sub"): ["a.json"]}
  fileio.remove(path)
  assert not fileio.exists(path)
  with pytest.raises(FileNotFoundError):
    fileio.remove(path)
  with pytest.raises(FileNotFoundError):
    fileio.listdir(fileio.join(root, "nothing"))


def test_failed_write_keeps_the_old_file_and_no_temporary(root):
  path = fileio.join(root, "a.npz")
  fileio.atomic_write_bytes(path, b"old")

  def half_then_fail(f):
    f.write(b"half")
    raise OSError("disk full")

  with pytest.raises(OSError, match="disk full"):
    fileio.atomic_write(path, half_then_fail, tmp_name=".a.npz.p3.tmp")
  assert fileio.read_bytes(path) == b"old"
  assert fileio.listdir(root) == ["a.npz"]


def test_a_named_temporary_is_what_the_writer_sees(root):
  seen = []
  fileio.atomic_write(
    fileio.join(root, "s.npz"), lambda f: seen.append(os.path.basename(f.name)), ".s.npz.p1.tmp"
  )
  assert seen == [".s.npz.p1.tmp"] and fileio.listdir(root) == ["s.npz"]


def test_append_keeps_every_line(root):
  path = fileio.join(root, "metrics.jsonl")
  for i in range(3):
    fileio.append_text(path, f'{{"step": {i}}}\n')
  assert fileio.read_text(path).splitlines() == ['{"step": 0}', '{"step": 1}', '{"step": 2}']
