"""Checkpoint and workdir faults, each reproduced small (toy 2-D MLP, 10-20 steps): an optimizer
change is not damage, redone steps replace damaged ones, bit rot is caught by checksums, a changed
set-up is refused (by config.json and by each step's own record), one run per workdir and per
checkpoint folder, a checkpoint folder that moved or belongs to another run is refused, unverified
steps are named, a full disk and Ctrl-C give a message and leave nothing half-written, train.py
refuses positional arguments and unreadable config.json files in one line, start-up errors leave no
empty workdir."""

import glob
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from helpers import ROOT, tiny_points_config, tiny_train_cmd

from jaxdiff.errors import (
  CheckpointError,
  ConfigError,
  DataError,
  NonFiniteLossError,
  SamplingError,
  WorkdirError,
)
from jaxdiff.models import create_model
from jaxdiff.training import Checkpointer, create_train_state, loop, train
from jaxdiff.training.integrity import MANIFEST_NAME
from jaxdiff.training.metrics import MetricsWindow
from jaxdiff.training.restore import restore_model
from jaxdiff.training.run_records import OWNER_NAME, RUN_RECORD_NAME, load_config
from jaxdiff.training.workdir_lock import LOCK_NAME, WorkdirLock


def _leaves(tree):
  return [np.asarray(x) for x in jax.tree_util.tree_leaves(jax.device_get(tree))]


def _target(c):
  return create_train_state(c, create_model(c), jax.random.key(0))


def _largest_data_file(wd, step):
  files = glob.glob(os.path.join(str(wd), "checkpoints", str(step), "state", "**", "d", "*"), recursive=True)
  return max(files, key=os.path.getsize)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """A healthy 20-step run (checkpoints 10 and 20), copied by each test that changes it."""
  wd = tmp_path_factory.mktemp("trained") / "w"
  train(tiny_points_config(num_steps=20), str(wd))
  return wd


def _copy(trained, tmp_path):
  wd = tmp_path / "w"
  shutil.copytree(trained, wd)
  return wd


def test_checksums_written_after_each_save_and_verified(trained):
  ck = Checkpointer(str(trained))
  for s in ck.all_steps():
    with open(os.path.join(ck.directory, str(s), MANIFEST_NAME)) as f:
      files = json.load(f)["files"]
    assert any(k.startswith("state/") for k in files)
    assert ck.verify(s) is True  # nothing Orbax writes later changes a complete step
  assert not os.path.exists(trained / LOCK_NAME)  # released on exit


# 1: an optimizer change on resume is not damage


@pytest.mark.parametrize(
  "field,value,named",
  [
    ("optim.grad_clip", 0.0, "optim.grad_clip"),
    ("train.grad_accum_steps", 2, "train.grad_accum_steps"),
    ("optim.optimizer", "adamw", "optim.optimizer"),
  ],
)
def test_optimizer_change_restores_params_with_fresh_optimizer(trained, field, value, named, caplog):
  c = tiny_points_config(num_steps=20)
  sec, name = field.split(".")
  c[sec][name] = value
  want = Checkpointer(str(trained)).restore(_target(tiny_points_config(num_steps=20)))[0]
  with caplog.at_level(logging.WARNING):
    state, s = Checkpointer(str(trained), config=c).restore(_target(c))
  assert s == 20 and int(state.step) == 20  # the newest step: nothing was called damaged
  for a, b in zip(
    _leaves(want.params) + _leaves(want.ema_params), _leaves(state.params) + _leaves(state.ema_params)
  ):
    np.testing.assert_array_equal(a, b)
  assert jax.tree_util.tree_structure(state.opt_state) == jax.tree_util.tree_structure(_target(c).opt_state)
  text = caplog.text
  assert "optimizer changed" in text and named in text and "damaged" not in text


def test_optimizer_change_resumes_training(trained, tmp_path):
  wd = _copy(trained, tmp_path)
  c = tiny_points_config(num_steps=30)
  c.optim.grad_clip = 0.0
  out = train(c, str(wd))
  assert int(out.step) == 30 and Checkpointer(str(wd)).all_steps()[-1] == 30


# 2 and 3: a damaged newest step falls back, and the redone step replaces it; bit rot is damage


def test_bit_rot_falls_back_and_the_redone_step_replaces_it(trained, tmp_path, caplog):
  wd = _copy(trained, tmp_path)
  path = _largest_data_file(wd, 20)
  data = bytearray(open(path, "rb").read())
  for i in (len(data) // 2, len(data) // 2 + 7):  # two flipped bytes, same size
    data[i] ^= 0xFF
  with open(path, "wb") as f:
    f.write(data)
  with caplog.at_level(logging.WARNING):
    state, s = Checkpointer(str(wd)).restore(_target(tiny_points_config()))
  assert s == 10 and int(state.step) == 10
  assert "checksum mismatch" in caplog.text and "pybind11" not in caplog.text
  assert restore_model(str(wd))[4] == 10  # sample.py's restore falls back too
  train(tiny_points_config(num_steps=20), str(wd))  # resumes at 10, redoes 20
  ck = Checkpointer(str(wd))
  assert ck.verify(20) is True
  assert ck.restore(_target(tiny_points_config()))[1] == 20 and not ck.damaged


def test_truncated_newest_step_reason_is_readable(trained, tmp_path, caplog):
  wd = _copy(trained, tmp_path)
  manifest = os.path.join(wd, "checkpoints", "20", MANIFEST_NAME)
  if os.path.exists(manifest):
    os.remove(manifest)  # as a step saved before checksums: Orbax's own error is what is reported
  path = _largest_data_file(wd, 20)
  with open(path, "r+b") as f:
    f.truncate(os.path.getsize(path) // 3)
  with caplog.at_level(logging.WARNING):
    assert Checkpointer(str(wd)).restore(_target(tiny_points_config()))[1] == 10
  assert "pybind11" not in caplog.text and "<bound method" not in caplog.text


# 4: fields that change what the checkpoint means must match config.json


def test_changed_setup_is_refused_naming_the_fields(trained, tmp_path):
  wd = _copy(trained, tmp_path)
  before = (wd / "config.json").read_text()
  c = tiny_points_config(num_steps=30)
  c.diffusion.prediction = "v"
  c.diffusion.schedule = "cosine"
  with pytest.raises(CheckpointError, match="diffusion.prediction 'eps' there, 'v' now") as e:
    train(c, str(wd))
  assert "diffusion.schedule" in str(e.value)
  assert (wd / "config.json").read_text() == before and not os.path.exists(wd / LOCK_NAME)


# 6: one run per workdir


def _hold_lock(wd):
  code = (
    "import sys, time\nfrom jaxdiff.training.workdir_lock import WorkdirLock\n"
    f"WorkdirLock({str(wd)!r}).acquire()\nprint('held', flush=True)\ntime.sleep(600)\n"
  )
  proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=ROOT)
  assert proc.stdout.readline().strip() == "held"
  return proc


def test_second_run_is_refused_and_a_dead_runs_lock_does_not_block(tmp_path):
  wd = tmp_path / "w"
  wd.mkdir()
  holder = _hold_lock(wd)
  try:
    with pytest.raises(WorkdirError, match=f"host {socket.gethostname()}, pid {holder.pid}"):
      train(tiny_points_config(num_steps=10), str(wd))
    assert not os.path.exists(wd / "checkpoints")  # refused before anything was written
  finally:
    holder.send_signal(signal.SIGKILL)
    holder.wait()
  assert os.path.exists(wd / LOCK_NAME)  # left behind by the killed run: stale
  assert int(train(tiny_points_config(num_steps=10), str(wd)).step) == 10
  assert not os.path.exists(wd / LOCK_NAME)


def test_lock_of_another_host_blocks_until_its_heartbeat_is_old(tmp_path):
  path = tmp_path / LOCK_NAME
  path.write_text(json.dumps({"host": "tpu-vm-7", "pid": 4242, "started": "earlier"}))
  with pytest.raises(WorkdirError, match="host tpu-vm-7, pid 4242"):
    WorkdirLock(str(tmp_path), stale_s=600).acquire()
  old = time.time() - 3600
  os.utime(path, (old, old))
  lock = WorkdirLock(str(tmp_path), stale_s=600).acquire()
  assert json.loads(path.read_text())["pid"] == os.getpid()
  lock.release()
  assert not path.exists()


# 10: a full disk; Ctrl-C


def test_failed_checkpoint_write_is_one_message_and_leaves_nothing_half_written(tmp_path, monkeypatch):
  c = tiny_points_config(num_steps=20)
  ck = Checkpointer(str(tmp_path), config=c)
  state = _target(c)
  partial = os.path.join(ck.directory, "10.orbax-checkpoint-tmp")

  def full(*a, **k):  # what Orbax raises when TensorStore cannot write (the text of a real ENOSPC)
    os.makedirs(os.path.join(partial, "state.orbax-checkpoint-tmp"), exist_ok=True)
    raise ValueError(
      'RESOURCE_EXHAUSTED: Error writing "params.x/0" in OCDBT database at local file "...": Failed to '
      "write 478046 bytes to file 17: No space left on device [os_error_code='28']"
    )

  monkeypatch.setattr(ck.manager, "save", full)
  with pytest.raises(CheckpointError, match="step 10.*no space left on device.*no checkpoint is complete"):
    ck.save(state.replace(step=10))
  assert not os.path.exists(partial)


@pytest.mark.slow
@pytest.mark.skipif(
  not sys.platform.startswith("linux") or os.geteuid() != 0, reason="mounts a small tmpfs (root only)"
)
def test_full_disk_during_training_cli(tmp_path):
  mnt = tmp_path / "small"
  mnt.mkdir()
  if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=160k", "tmpfs", str(mnt)]).returncode:
    pytest.skip("cannot mount a tmpfs here")
  try:
    r = subprocess.run(_train_cmd(mnt / "w", "--config.train.num_steps=20"), capture_output=True, text=True)
    assert r.returncode == 2, r.stderr[-2000:]
    assert "Traceback" not in r.stderr and "no space left on device" in r.stderr
    assert not glob.glob(str(mnt / "w" / "checkpoints" / "*tmp*"))
  finally:
    subprocess.run(["umount", str(mnt)])


def _train_cmd(workdir, *extra):
  return tiny_train_cmd(workdir, "--config.train.checkpoint_every=10", "--config.train.log_every=10", *extra)


@pytest.mark.slow
def test_ctrl_c_saves_and_exits_cleanly(tmp_path):
  wd = tmp_path / "w"
  proc = subprocess.Popen(
    _train_cmd(wd, "--config.train.num_steps=1000000", "--config.train.checkpoint_every=100000"),
    stdout=subprocess.PIPE,
    stderr=subprocess.PIPE,
    text=True,
  )
  deadline = time.time() + 600  # start-up and the first compile: minutes on a loaded machine
  while time.time() < deadline and not (wd / "metrics.jsonl").exists():
    time.sleep(0.3)
  while (
    time.time() < deadline
    and (wd / "metrics.jsonl").exists()
    and len(open(wd / "metrics.jsonl").readlines()) < 3
  ):
    time.sleep(0.2)
  if time.time() >= deadline:
    proc.kill()
    pytest.fail(f"training logged fewer than 3 steps in 600 s: {proc.communicate()[1][-3000:]}")
  proc.send_signal(signal.SIGINT)
  out, err = proc.communicate(timeout=120)
  assert proc.returncode == 0, err[-3000:]
  assert "stopped by SIGINT" in out and "Traceback" not in err
  steps = Checkpointer(str(wd)).all_steps()
  assert len(steps) == 1 and steps[0] > 0 and not os.path.exists(wd / LOCK_NAME)


# 11 and the start-up messages


def test_train_py_rejects_positional_arguments_and_a_file_workdir(tmp_path):
  r = subprocess.run(_train_cmd(tmp_path / "w", "stray"), capture_output=True, text=True)
  assert r.returncode == 2 and "unexpected arguments ['stray']" in r.stderr and not (tmp_path / "w").exists()
  f = tmp_path / "file"
  f.write_text("x")
  with pytest.raises(WorkdirError, match="is a file, not a folder"):
    train(tiny_points_config(), str(f))


def test_start_up_error_leaves_no_empty_workdir(tmp_path, monkeypatch):
  def missing(config):  # a data set that turns out to be missing once the workdir exists
    raise DataError("config.data.name='tfds/x': not prepared")

  monkeypatch.setattr(loop.data_lib, "dataset_info", missing)
  with pytest.raises(DataError):
    train(tiny_points_config(), str(tmp_path / "new"))
  assert not (tmp_path / "new").exists()
  (tmp_path / "old").mkdir()
  with pytest.raises(DataError):  # a folder that was there before stays
    train(tiny_points_config(), str(tmp_path / "old"))
  assert (tmp_path / "old").is_dir() and not os.listdir(tmp_path / "old")


def test_train_py_without_config_resumes_from_the_workdirs_config_json(trained, tmp_path):
  wd = _copy(trained, tmp_path)
  run = lambda *a: subprocess.run(  # noqa: E731
    [sys.executable, os.path.join(ROOT, "train.py"), *a], capture_output=True, text=True, cwd=ROOT
  )
  r = run(f"--workdir={wd}")
  assert r.returncode == 0, r.stderr
  out = r.stdout + r.stderr
  assert "No --config: using" in out and "resumed at step 20" in out and "done at step 20" in out
  r = run(f"--workdir={tmp_path / 'empty'}")  # nothing to resume: --config is required
  assert r.returncode == 2 and "--config is missing" in r.stderr and not (tmp_path / "empty").exists()
  r = run(f"--workdir={wd}", "--config.train.num_steps=30")  # overrides need a file to override
  assert r.returncode == 2 and "overrides need a config file" in r.stderr


# checkpoint folders that belong to one run


def _custom_dir_config(folder, num_steps=10):
  c = tiny_points_config(num_steps=num_steps)
  c.train.checkpoint_dir = str(folder)
  return c


def test_relative_checkpoint_dir_is_stored_resolved_and_a_moved_one_is_refused(tmp_path, monkeypatch):
  (tmp_path / "a").mkdir()
  (tmp_path / "b").mkdir()
  wd = tmp_path / "w"
  monkeypatch.chdir(tmp_path / "a")
  train(_custom_dir_config("ck"), str(wd))
  stored = json.loads((wd / "config.json").read_text())["train"]["checkpoint_dir"]
  assert stored == str(tmp_path / "a" / "ck") and (tmp_path / "a" / "ck" / "10").is_dir()
  assert load_config(str(wd)).train.checkpoint_dir == stored  # sample.py finds it from anywhere
  monkeypatch.chdir(tmp_path / "b")  # the same relative path from another directory
  with pytest.raises(CheckpointError, match="keeps its checkpoints in") as e:
    train(_custom_dir_config("ck", 20), str(wd))
  assert str(tmp_path / "a" / "ck") in str(e.value) and str(tmp_path / "b" / "ck") in str(e.value)
  with pytest.raises(CheckpointError, match="keeps its checkpoints in"):  # the override dropped
    train(tiny_points_config(num_steps=20), str(wd))
  assert not (wd / "checkpoints").exists() and not (tmp_path / "b" / "ck").exists()
  assert not os.path.exists(wd / LOCK_NAME)
  out = train(_custom_dir_config(tmp_path / "a" / "ck", 20), str(wd))  # the run's own folder resumes
  assert int(out.step) == 20


def test_second_workdir_on_a_checkpoint_folder_is_refused(tmp_path):
  ck = tmp_path / "ck"
  train(_custom_dir_config(ck), str(tmp_path / "w1"))
  owner = json.loads((ck / OWNER_NAME).read_text())
  assert owner["workdir"] == str(tmp_path / "w1")
  assert owner["run_id"] == json.loads((tmp_path / "w1" / RUN_RECORD_NAME).read_text())["run_id"]
  c = _custom_dir_config(ck, 20)
  c.diffusion.prediction = "v"
  with pytest.raises(CheckpointError, match="holds the steps of the run in") as e:
    train(c, str(tmp_path / "w2"))
  assert str(tmp_path / "w1") in str(e.value)
  assert Checkpointer(str(tmp_path / "w1"), directory=str(ck)).all_steps() == [10]  # untouched
  assert not (tmp_path / "w2").exists() and not os.path.exists(ck / LOCK_NAME)
  # a copied workdir keeps its run id, so it resumes in its own folder
  shutil.copytree(tmp_path / "w1", tmp_path / "w3")
  shutil.rmtree(tmp_path / "w1")
  assert int(train(_custom_dir_config(ck, 20), str(tmp_path / "w3")).step) == 20


def test_checkpoint_folder_outside_the_workdir_is_locked(tmp_path):
  ck = tmp_path / "ck"
  ck.mkdir()
  holder = _hold_lock(ck)
  try:
    with pytest.raises(WorkdirError, match="checkpoint folder"):
      train(_custom_dir_config(ck), str(tmp_path / "w"))
  finally:
    holder.kill()
    holder.wait()


def test_each_step_records_its_setup_and_an_edited_config_json_is_refused(trained, tmp_path):
  wd = _copy(trained, tmp_path)
  manifest = json.loads((wd / "checkpoints" / "20" / MANIFEST_NAME).read_text())
  assert manifest["setup"]["diffusion.prediction"] == "eps" and manifest["setup"]["model.name"] == "mlp"
  config = json.loads((wd / "config.json").read_text())
  config["diffusion"]["prediction"] = "v"
  (wd / "config.json").write_text(json.dumps(config))
  with pytest.raises(SamplingError, match="diffusion.prediction 'eps' in the checkpoint, 'v' in the config"):
    restore_model(str(wd))  # what sample.py and jaxdiff.load restore through
  c = tiny_points_config(num_steps=30)
  c.diffusion.prediction = "v"  # config.json agrees with it now: the step's own record refuses
  with pytest.raises(
    CheckpointError, match="diffusion.prediction 'eps' in the checkpoint, 'v' in the config"
  ):
    train(c, str(wd))


# unverified steps are named, and never called good


def test_step_without_checksums_is_restored_with_a_warning_naming_it(trained, tmp_path, caplog):
  wd = _copy(trained, tmp_path)
  os.remove(wd / "checkpoints" / "20" / MANIFEST_NAME)
  ck = Checkpointer(str(wd))
  with caplog.at_level(logging.WARNING):
    assert ck.restore(_target(tiny_points_config()))[1] == 20
  assert any(
    r.levelno == logging.WARNING and "Checkpoint 20 has no checksums" in r.getMessage()
    for r in caplog.records
  )
  assert ck.unverified == {20}
  window = MetricsWindow(16, "stop", ck, last_saved=20)
  window.add(20, {"loss": np.array(np.nan), "nonfinite": np.array(1.0)}, 1)
  with pytest.raises(NonFiniteLossError) as e:
    window.flush()
  assert "good" not in str(e.value) and "no checksums" in str(e.value) and "checkpoint 20" in str(e.value)


# train.py: a workdir's config.json that cannot be used is one line naming it


@pytest.mark.parametrize("content", ["[1, 2]", "{not json", None])
def test_unusable_config_json_is_a_config_error_naming_the_file(tmp_path, content):
  wd = tmp_path / "w"
  wd.mkdir()
  if content is None:
    (wd / "config.json").mkdir()  # unreadable as a file
  else:
    (wd / "config.json").write_text(content)
  with pytest.raises(ConfigError, match="config.json") as e:
    load_config(str(wd))
  assert str(wd / "config.json") in str(e.value)


def test_train_py_reports_a_config_json_that_is_not_an_object_in_one_line(tmp_path):
  wd = tmp_path / "w"
  wd.mkdir()
  (wd / "config.json").write_text("[1, 2]")
  r = subprocess.run(
    [sys.executable, os.path.join(ROOT, "train.py"), f"--workdir={wd}"],
    capture_output=True,
    text=True,
    cwd=ROOT,
  )
  assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
  assert f"{wd / 'config.json'} holds a JSON list, not a config" in r.stderr


# a run shorter than sample_every still ends with a picture


def test_short_run_writes_a_final_sample_grid(tmp_path):
  c = tiny_points_config(num_steps=10)
  c.train.sample_every = 1000
  c.train.num_sample_images = 64
  train(c, str(tmp_path / "w"))
  assert os.listdir(tmp_path / "w" / "samples") == ["step_0000010.png"]


def test_async_save_writes_the_state_as_it_was_when_the_next_step_donates_its_buffers(tmp_path):
  """save() hands Orbax host copies of the whole state: a step that donates (overwrites) the device
  buffers while the write runs in the background does not change what the checkpoint holds."""
  c = tiny_points_config()
  state = _target(c)
  want = jax.tree_util.tree_map(np.array, state.params)
  ck = Checkpointer(str(tmp_path / "w"), config=c)
  ck.save(state)
  bump = jax.jit(lambda p: jax.tree_util.tree_map(lambda x: x + 1.0, p), donate_argnums=0)
  bumped = bump(state.params)  # the old device buffers are reused for the new values
  ck.close()
  got, step = Checkpointer(str(tmp_path / "w"), config=c).restore(_target(c))
  assert step == 0
  jax.tree_util.tree_map(np.testing.assert_array_equal, jax.tree_util.tree_map(np.asarray, got.params), want)
  leaf = jax.tree_util.tree_leaves(bumped)[0]
  np.testing.assert_array_equal(np.asarray(leaf), jax.tree_util.tree_leaves(want)[0] + 1.0)


def _distinct_state(c):
  """A train state whose every array holds its own values (params, Adam moments, EMA, counts)."""
  state = _target(c)
  leaves, treedef = jax.tree_util.tree_flatten(state)
  leaves = [
    (np.arange(np.size(x), dtype=np.asarray(x).dtype).reshape(np.shape(x)) * (i + 1) + i)
    if isinstance(x, jax.Array)
    else x
    for i, x in enumerate(leaves)
  ]
  return jax.tree_util.tree_unflatten(treedef, [jax.numpy.asarray(x) for x in leaves])


@pytest.mark.parametrize("pack_max", [None, 64])
def test_packed_checkpoint_restores_every_array_exactly(tmp_path, monkeypatch, pack_max):
  """A single-process save writes the small arrays as one vector per dtype (larger ones whole) and
  a layout; restore gives back every array of the state, in place, with its dtype."""
  from jaxdiff.training import checkpointer, packing

  if pack_max is not None:
    monkeypatch.setattr(packing, "PACK_MAX", pack_max)
  c = tiny_points_config()
  state = _distinct_state(c)
  ck = Checkpointer(str(tmp_path / "w"), config=c)
  ck.save(state)
  ck.close()
  meta = json.loads((tmp_path / "w" / "checkpoints" / "0" / "state" / "_METADATA").read_text())
  saved = sorted(meta["tree_metadata"])
  leaves = jax.tree_util.tree_leaves(checkpointer.state_to_tree(state))
  if pack_max is None:  # every array is small: the step and one vector per dtype
    assert saved == ["('packed', 'float32')", "('packed', 'int32')", "('step',)"]
  else:
    big = [x for x in leaves if x.size > pack_max]
    assert big and len(saved) == 3 + len(big)
  target = _target(c)
  got, step = Checkpointer(str(tmp_path / "w"), config=c).restore(target)
  assert step == int(state.step)
  trees = [checkpointer.state_to_tree(x) for x in (state, got, target)]
  assert len({jax.tree_util.tree_structure(t) for t in trees}) == 1
  for a, b, t in zip(*(jax.tree_util.tree_leaves(x) for x in trees), strict=True):
    assert np.asarray(b).dtype == np.asarray(t).dtype  # the target's dtypes, as Orbax restores
    assert getattr(b, "sharding", None) == getattr(t, "sharding", None)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_checkpoints_of_one_array_per_leaf_still_restore(tmp_path, caplog):
  """Steps saved as one Orbax array per leaf (by several processes, or before packing) restore as
  before, and a packed save goes on beside them."""
  from jaxdiff.training import checkpointer

  c = tiny_points_config()
  state = _distinct_state(c)
  ck = Checkpointer(str(tmp_path / "w"), config=c)
  ck.manager.save(0, args=ocp.args.Composite(state=ocp.args.StandardSave(checkpointer.state_to_tree(state))))
  ck.manager.wait_until_finished()
  ck.close()
  assert not (tmp_path / "w" / "checkpoints" / "0" / "layout").exists()
  with caplog.at_level(logging.WARNING):
    got, step = Checkpointer(str(tmp_path / "w"), config=c).restore(_target(c))
  assert step == 0 and "no checksums" in caplog.text
  for a, b in zip(jax.tree_util.tree_leaves(state), jax.tree_util.tree_leaves(got), strict=True):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  ck = Checkpointer(str(tmp_path / "w"), config=c)
  ck.save(got.replace(step=got.step + 10))
  ck.close()
  assert (tmp_path / "w" / "checkpoints" / "10" / "layout").exists()
  assert Checkpointer(str(tmp_path / "w"), config=c).restore(_target(c), step=0)[1] == 0
