"""Workdirs and outputs in a bucket: jaxdiff.fileio on local paths and on a non-local backend (fsspec's
in-memory file system, `memory://`, standing in for gs://), and a training run whose workdir and
sample output live there: it trains, resumes, samples and is evaluated."""

import json
import os
import uuid

import jax
import numpy as np
import pytest
from helpers import tiny_points_config

import jaxdiff
from jaxdiff import fileio
from jaxdiff.bulk import generate
from jaxdiff.errors import CheckpointError
from jaxdiff.evaluation import cli as eval_cli
from jaxdiff.training import train
from jaxdiff.training.checkpointer import Checkpointer


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
    np.testing.assert_array_equal(np.load(f, allow_pickle=False)["x"], np.arange(5))
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


def test_store_lock_keeps_a_second_run_out_and_takes_over_stale_ones():
  url = f"memory://jaxdiff-lock-{uuid.uuid4().hex[:8]}/run/train.lock"
  me = {"host": "this-host", "pid": os.getpid()}
  try:
    lock = fileio.StoreLock(url, heartbeat_s=0.05).acquire(me)
    with pytest.raises(fileio.LockBusy) as busy:
      fileio.StoreLock(url).acquire({"host": "other-host", "pid": 7})
    assert busy.value.holder["host"] == "this-host" and busy.value.age < 5
    lock.release()
    assert not fileio.exists(url)
    # a lock whose heartbeat stopped long ago is taken over; so is one of a dead process on this host
    fileio.atomic_write_text(url, json.dumps({"host": "other-host", "pid": 7, "beat": 0.0}))
    fileio.StoreLock(url).acquire(me).release()
    fileio.atomic_write_text(url, json.dumps({"host": "this-host", "pid": 2**22 + 12345, "beat": 1e12}))
    fileio.StoreLock(url).acquire(me).release()
    fileio.atomic_write_text(url, json.dumps({"host": "other-host", "pid": 7, "beat": 1e12}))
    with pytest.raises(fileio.LockBusy):  # live on another host
      fileio.StoreLock(url).acquire(me)
  finally:
    fileio.rmtree(url.rsplit("/", 2)[0])


# ------------------------------------------------------------------ a run on the non-local backend


@pytest.mark.usefixtures("fast_compiles")
def test_a_run_in_the_store_trains_resumes_samples_and_is_evaluated(tmp_path, monkeypatch):
  """config.json, metrics.jsonl, the periodic scatter plots, the sample shards, summary.json, the
  figures and the evaluation report all live in memory://; Orbax's checkpoints go to
  config.train.checkpoint_dir (a local folder here: Orbax writes local paths and gs:// only)."""
  monkeypatch.chdir(tmp_path)  # nothing may appear locally but the checkpoints
  store = f"memory://jaxdiff-run-{uuid.uuid4().hex[:8]}"
  workdir, output = f"{store}/toy2d", f"{store}/toy2d/generated"
  config = tiny_points_config(20)
  config.train.sample_every = 10
  config.train.num_sample_images = 50
  config.train.checkpoint_dir = str(tmp_path / "ckpt")
  try:
    train(config, workdir, stop_at_step=10)
    first = fileio.read_text(f"{workdir}/metrics.jsonl").splitlines()
    train(config, workdir)  # resumes at step 10
    lines = [json.loads(x) for x in fileio.read_text(f"{workdir}/metrics.jsonl").splitlines()]
    assert len(lines) > len(first) and lines[-1]["step"] == 20
    assert {"10", "20"} <= set(os.listdir(tmp_path / "ckpt"))
    assert json.loads(fileio.read_text(f"{workdir}/config.json"))["train"]["num_steps"] == 20
    assert fileio.listdir(f"{workdir}/samples") == ["step_0000010.png", "step_0000020.png"]

    summary = generate(workdir, output, num_samples=30, num_steps=3, shard_size=20, progress=False)
    assert summary["complete"] and summary["checkpoint_step"] == 20
    names = fileio.listdir(output)
    assert {
      "samples_0000000_0000020.npz",
      "samples_0000020_0000030.npz",
      "summary.json",
      "scatter.png",
    } <= set(names)
    assert not [n for n in names if n.endswith(".tmp")]
    again = generate(workdir, output, num_samples=30, num_steps=3, shard_size=20, progress=False)
    assert again["runs"][-1]["generated"] == 0  # resumed: every shard checked and reused

    report = f"{output}/report.json"
    assert eval_cli.main([f"--samples={output}", "--dataset=toy2d/s_curve", f"--out={report}"]) == 0
    assert "swd" in json.dumps(json.loads(fileio.read_text(report)))

    run = jaxdiff.load(workdir)  # the notebook path reads the same store
    assert run.step == 20 and run.sample(jax.random.key(0), 4, num_steps=3).shape == (4, 2)
    local = {p.name for p in tmp_path.iterdir()}
    assert local == {"ckpt"}, local  # no "memory:" folder or stray file written locally
  finally:
    fileio.rmtree(store)


def test_checkpoints_refuse_a_store_orbax_cannot_write(tmp_path):
  with pytest.raises(CheckpointError, match="checkpoint_dir"):
    Checkpointer("memory://jaxdiff-test/run")
  assert not (tmp_path / "memory:").exists() and not os.path.exists("memory:")
