"""Run defects, each reproduced small: skipped updates without end, non-finite samples written, an
evaluation that advises unpickling, shards without run identity, float images in 0..255 scored,
tracebacks for config / --out mistakes, eval() in the benchmark tools. Every test here failed before
its fix."""

import ast
import errno
import json
import os
import pathlib
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest
from helpers import ROOT, tiny_points_config

from jaxdiff import fileio
from jaxdiff.bulk import SamplingError, check_shard, generate, read_shard
from jaxdiff.errors import DataError, NonFiniteLossError, run_cli
from jaxdiff.evaluation import cli as eval_cli
from jaxdiff.shards import read_samples, write_shard

SHARD = 8


def _env():
  return {**os.environ, "JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": ROOT}


def _points_workdir(path, scale: float = 1.0) -> str:
  """A tiny S-curve MLP workdir (checkpoint + config.json as train() writes them) with random weights
  times `scale`; no training compile (jax.eval_shape gives the structure)."""
  from jaxdiff.models import create_model
  from jaxdiff.training import Checkpointer, create_train_state, save_config

  c = tiny_points_config()
  model = create_model(c)
  abstract = jax.eval_shape(lambda: create_train_state(c, model, jax.random.key(0)))
  rng = np.random.default_rng(0)

  def draw(a):
    if not np.issubdtype(a.dtype, np.floating):
      return jax.device_put(np.zeros(a.shape, a.dtype))
    v = rng.standard_normal(a.shape) / np.sqrt(max(1, int(np.prod(a.shape[:-1]))))
    return jax.device_put((scale * v).astype(a.dtype))

  params = jax.tree_util.tree_map(draw, abstract.params)
  state = jax.tree_util.tree_map(lambda a: jax.device_put(np.zeros(a.shape, a.dtype)), abstract)
  state = state.replace(params=params, ema_params=params)
  ck = Checkpointer(path, async_save=False)
  ck.save(state)
  ck.close()
  save_config(c, path)
  return path


@pytest.fixture(scope="module")
def points_workdir(tmp_path_factory):
  return _points_workdir(str(tmp_path_factory.mktemp("points") / "run"))


# ---- 5: nan_policy=skip cannot skip everything and report success -----------------------------


def test_skip_policy_stops_naming_the_step_and_the_count(tmp_path):
  from jaxdiff.configs import default
  from jaxdiff.training import Checkpointer
  from jaxdiff.training.metrics import MetricsWindow

  assert default.get_config().train.max_skipped_steps >= 1
  w = MetricsWindow(16, "skip", Checkpointer(str(tmp_path)), 10, max_skipped=2)
  row = lambda bad: {"loss": np.float32(np.nan if bad else 1.0), "nonfinite": np.int32(bad)}
  w.add(10, row(1), 1)
  w.add(11, row(0), 1)
  w.add(12, row(1), 1)
  assert w.flush()["nonfinite"] == 2.0  # at the limit: goes on
  w.add(13, {"loss": np.asarray([np.nan, np.nan]), "nonfinite": np.asarray([1, 1])}, 2)
  with pytest.raises(NonFiniteLossError, match=r"3 updates were skipped .* by step 14 .*max_skipped_steps=2"):
    w.flush()


def test_training_that_skips_too_many_updates_stops(tmp_path):
  """The reproduction (learning rate 1e6, no clipping, nan_policy=skip), on the tiny MLP."""
  from jaxdiff.training import train

  c = tiny_points_config(num_steps=40)
  c.optim.learning_rate = 1e6
  c.optim.grad_clip = 0.0
  c.train.nan_policy = "skip"
  c.train.max_skipped_steps = 5
  with pytest.raises(NonFiniteLossError, match=r"updates were skipped .* by step \d+ .*max_skipped_steps=5"):
    train(c, str(tmp_path / "w"))


def test_sampling_refuses_to_write_non_finite_samples(tmp_path):
  wd = _points_workdir(str(tmp_path / "w"), scale=1e30)  # finite weights whose samples overflow
  out = tmp_path / "out"
  with pytest.raises(SamplingError, match=r"NaN or Inf: the model has diverged\. No shard"):
    generate(wd, str(out), num_samples=SHARD, shard_size=SHARD, progress=False)
  assert not [n for n in os.listdir(out) if n.endswith(".npz")]


# ---- 7: evaluation never advises unpickling ----------------------------------------------------


def test_evaluation_says_a_text_file_is_not_an_npz_shard(capsys):
  rc = run_cli(eval_cli.main, [f"--samples={ROOT}/README.md", "--dataset=digits"], prog=eval_cli.PROG)
  err = capsys.readouterr().err
  assert rc == 2 and "README.md is not an .npz sample shard" in err, err
  assert "pickle" not in err and len(err.strip().splitlines()) == 1


def test_every_np_load_refuses_pickles_explicitly():
  """Every np.load / numpy.load call in the repository passes allow_pickle=False."""
  missing = []
  for folder in ("jaxdiff", "benchmarks", "scripts", "tests"):
    for path in pathlib.Path(ROOT, folder).rglob("*.py"):
      for node in ast.walk(ast.parse(path.read_text())):
        if (
          isinstance(node, ast.Call)
          and isinstance(node.func, ast.Attribute)
          and node.func.attr == "load"
          and isinstance(node.func.value, ast.Name)
          and node.func.value.id in ("np", "numpy", "onp")
        ):
          ok = any(
            k.arg == "allow_pickle" and isinstance(k.value, ast.Constant) and k.value.value is False
            for k in node.keywords
          )
          if not ok:
            missing.append(f"{path.relative_to(ROOT)}:{node.lineno}")
  assert not missing, missing


# ---- 8: each shard records its run -------------------------------------------------------------


def test_check_shard_tells_a_shard_of_another_run(tmp_path):
  x = np.zeros((4, 2), np.float32)
  labels = np.full(4, -1, np.int32)
  run = {"seed": 0, "sampler": "ddim", "checkpoint_step": 10}
  path = write_shard(str(tmp_path), 0, 4, "points", x, labels, run=run)
  assert check_shard(path, 0, 4, "points", (2,), labels, run=run) is None
  assert check_shard(path, 0, 4, "points", (2,), labels) is None  # callers that do not ask
  problem = check_shard(path, 0, 4, "points", (2,), labels, run=dict(run, seed=1))
  assert "another run" in problem and "seed 0 (shard) vs 1 (this run)" in problem
  legacy = write_shard(str(tmp_path / "old"), 0, 4, "points", x, labels)  # no record
  assert "records no run" in check_shard(legacy, 0, 4, "points", (2,), labels, run=run)
  # evaluation refuses to pool shards of two runs
  write_shard(str(tmp_path), 4, 8, "points", x, labels, run=dict(run, seed=1))
  with pytest.raises(DataError, match="another sampling run.*seed"):
    read_samples(str(tmp_path))


def test_a_shard_copied_from_another_seed_is_regenerated(points_workdir, tmp_path):
  kw = dict(num_samples=2 * SHARD, shard_size=SHARD, progress=False)
  generate(points_workdir, str(tmp_path / "s0"), **kw)
  generate(points_workdir, str(tmp_path / "s1"), seed=1, **kw)
  out = tmp_path / "mixed"
  shutil.copytree(tmp_path / "s0", out)
  name = "samples_0000008_0000016.npz"
  shutil.copy(tmp_path / "s1" / name, out / name)  # the reproduction: a --seed=1 shard
  s = generate(points_workdir, str(out), **kw)
  assert s["regenerated_shards"] == 1 and s["reused_samples"] == SHARD and s["generated_this_run"] == SHARD
  np.testing.assert_allclose(
    read_shard(str(out / name))["points"], read_shard(str(tmp_path / "s0" / name))["points"], atol=1e-5
  )
  assert json.loads(str(read_shard(str(out / name))["run"]))["seed"] == 0


# ---- 9: float images in 0..255 are refused ------------------------------------------------------


def test_float_images_in_0_255_are_refused_with_the_expected_range():
  x = np.random.default_rng(0).uniform(0, 255, (20, 8, 8, 1)).astype(np.float32)
  samples = {"images": x, "labels": None, "index": None}
  for dataset in ("digits", "fid"):
    with pytest.raises(DataError, match=r"float images must be in \[-1, 1\].*0\.\.255 pixel values"):
      eval_cli.evaluate_samples(samples, dataset)
  eval_cli.check_image_range(x / 127.5 - 1.0)  # the same images in range pass
  eval_cli.check_image_range(x.astype(np.uint8))


# ---- 10: one-line messages instead of tracebacks -----------------------------------------------


@pytest.mark.parametrize(
  "args, message",
  [
    (
      ["--config=configs/toy2d.py", "--config.train.num_stepz=3"],
      "config.train.num_stepz is not a field jaxdiff reads; did you mean --config.train.num_steps?",
    ),
    (["--config=configs/nope.py"], "Config file configs/nope.py does not exist"),
    (["--config={noget}"], "has no get_config()"),
  ],
)
def test_train_config_mistakes_are_one_line_messages(tmp_path, args, message):
  noget = tmp_path / "noget.py"
  noget.write_text("def other():\n  return 1\n")
  args = [a.format(noget=noget) for a in args]
  r = subprocess.run(
    [sys.executable, "train.py", *args, f"--workdir={tmp_path / 'w'}"],
    cwd=ROOT,
    env=_env(),
    capture_output=True,
    text=True,
    timeout=120,
  )
  assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-3000:]
  assert r.stderr.strip().splitlines()[-1].startswith("train.py: error: ") and message in r.stderr
  assert len(r.stderr.strip().splitlines()) == 1, r.stderr
  assert not (tmp_path / "w").exists()


def test_read_only_evaluation_out_is_a_message_before_any_work(tmp_path, monkeypatch, capsys):
  x = np.random.default_rng(0).standard_normal((64, 2)).astype(np.float32)
  write_shard(str(tmp_path), 0, 64, "points", x, np.full(64, -1, np.int32))

  def read_only(path, *a, **k):  # every write of jaxdiff goes through fileio.atomic_write
    raise OSError(errno.EROFS, "Read-only file system", str(path))

  monkeypatch.setattr(fileio, "atomic_write", read_only)
  out = tmp_path / "report.json"
  rc = run_cli(
    eval_cli.main, [f"--samples={tmp_path}", "--dataset=toy2d/s_curve", f"--out={out}"], prog=eval_cli.PROG
  )
  captured = capsys.readouterr()
  assert rc == 2 and f"--out={out} cannot be written (Read-only file system)" in captured.err
  assert len(captured.err.strip().splitlines()) == 1 and captured.out == ""  # refused before evaluating


# ---- 12: the benchmark tools never eval() a string ----------------------------------------------


def test_benchmark_report_does_not_evaluate_results_files(tmp_path):
  marker = tmp_path / "PWNED"
  crafted = f"[__import__('pathlib').Path({str(marker)!r}).touch()]"
  rec = {
    "row": "tiny",
    "cold": {"first_step_s": 1.0},
    "warm": {"first_step_s": 0.5, "peak_rss_mb": 100.0},
    "loadavg": crafted,
  }
  (tmp_path / "compile.jsonl").write_text(json.dumps(rec) + "\n")
  r = subprocess.run(
    [sys.executable, os.path.join(ROOT, "benchmarks", "report.py")],
    env={**_env(), "JAXDIFF_BENCH_RESULTS": str(tmp_path)},
    capture_output=True,
    text=True,
    timeout=120,
  )
  assert not marker.exists()
  assert r.returncode == 0, r.stderr[-2000:]
  sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
  try:
    import profile_step
    import report
  finally:
    sys.path.remove(os.path.join(ROOT, "benchmarks"))
  assert report.first_load("['0.52', '0.40', '0.31']") == "0.52"
  assert report.first_load(crafted) == "?" and not marker.exists()
  assert profile_step.parse_override("(1, 2)") == (1, 2) and profile_step.parse_override("-3") == -3
  assert profile_step.parse_override("True") is True and profile_step.parse_override("silu") == "silu"
  assert profile_step.parse_override(crafted) == crafted and not marker.exists()


# ---- one writer per output folder; unwritable outputs; memory that does not grow with the run ----


def test_a_second_run_into_a_folder_being_written_is_refused(points_workdir, tmp_path):
  from jaxdiff.bulk.folder import LOCK_NAME, OutputLock

  out = str(tmp_path / "out")
  with OutputLock(out):  # another run writing this folder (an flock, as a live sample.py holds it)
    for seed in (0, 1):  # the same settings or others: refused either way, nothing written
      with pytest.raises(SamplingError, match="being written by another sampling run"):
        generate(points_workdir, out, num_samples=SHARD, shard_size=SHARD, seed=seed, progress=False)
    assert os.listdir(out) == [LOCK_NAME]
  generate(points_workdir, out, num_samples=SHARD, shard_size=SHARD, progress=False)
  assert LOCK_NAME not in os.listdir(out) and "run.json" in os.listdir(out)


def test_a_run_does_not_delete_the_temporary_shard_of_a_run_writing_the_folder(points_workdir, tmp_path):
  from jaxdiff.bulk.folder import OutputLock

  out = tmp_path / "out"
  generate(points_workdir, str(out), num_samples=SHARD, shard_size=SHARD, progress=False)
  with OutputLock(str(out)):  # an identical run, extending the folder, is writing its next shard
    temp = out / ".samples_0000008_0000016.npz.p0.tmp"
    temp.write_bytes(b"half a shard")
    with pytest.raises(SamplingError, match="being written by another sampling run"):
      generate(points_workdir, str(out), num_samples=2 * SHARD, shard_size=SHARD, progress=False)
    assert temp.read_bytes() == b"half a shard"


def test_a_lock_left_by_a_killed_run_does_not_block(points_workdir, tmp_path):
  from jaxdiff.bulk.folder import LOCK_NAME

  out = tmp_path / "out"
  out.mkdir()
  (out / LOCK_NAME).write_text(json.dumps({"host": "elsewhere", "pid": 1}))  # no process holds its flock
  s = generate(points_workdir, str(out), num_samples=SHARD, shard_size=SHARD, progress=False)
  assert s["complete"] and LOCK_NAME not in os.listdir(out)


def test_an_output_below_a_file_is_one_message_naming_it(points_workdir, tmp_path):
  (tmp_path / "file").write_text("not a folder")
  out = tmp_path / "file" / "out"
  with pytest.raises(SamplingError, match=f"--output={out} cannot be written: Not a directory"):
    generate(points_workdir, str(out), num_samples=SHARD, shard_size=SHARD, progress=False)
  r = subprocess.run(
    [sys.executable, os.path.join(ROOT, "sample.py"), f"--workdir={points_workdir}", "--num_samples=4",
     f"--output={out}"],
    env=_env(), capture_output=True, text=True, timeout=240,
  )  # fmt: skip
  assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-3000:]
  assert len(r.stderr.strip().splitlines()) == 1 and f"--output={out} cannot be written" in r.stderr


def test_a_read_only_output_is_one_message_and_leaves_nothing(points_workdir, tmp_path, monkeypatch):
  def read_only(path, *a, **k):
    raise OSError(errno.EROFS, "Read-only file system", str(path))

  monkeypatch.setattr(fileio, "makedirs", read_only)
  out = tmp_path / "ro"
  with pytest.raises(SamplingError, match=f"--output={out} cannot be written: Read-only file system"):
    generate(points_workdir, str(out), num_samples=SHARD, shard_size=SHARD, progress=False)
  assert not out.exists()


def test_a_full_disk_while_writing_shards_is_one_message(points_workdir, tmp_path, monkeypatch):
  import jaxdiff.shards

  def full(path, *a, **k):
    raise OSError(errno.ENOSPC, "No space left on device", str(path))

  monkeypatch.setattr(jaxdiff.shards, "atomic_write", full)
  out = tmp_path / "full"
  with pytest.raises(SamplingError, match=f"--output={out} cannot be written: No space left on device"):
    generate(points_workdir, str(out), num_samples=SHARD, shard_size=SHARD, progress=False)
  assert not [n for n in os.listdir(out) if n.endswith(".npz")]


class _Stop(Exception):
  pass


def test_memory_does_not_grow_with_num_samples(points_workdir, tmp_path, monkeypatch):
  """A run of 2**26 samples: the sample numbers are made batch by batch, not all up front (a run
  near 2**31 samples would otherwise allocate gigabytes before its first shard)."""
  import importlib
  import tracemalloc

  def compiled(*a, **k):
    def fn(*args):
      raise _Stop

    return fn

  for name in ("jaxdiff.bulk.batches", "jaxdiff.bulk.run"):  # wherever the compiled sampler is made
    try:
      monkeypatch.setattr(importlib.import_module(name), "_compiled", compiled, raising=False)
    except ImportError:
      pass
  tracemalloc.start()
  try:
    with pytest.raises(_Stop):
      generate(points_workdir, str(tmp_path / "big"), num_samples=2**26, shard_size=2**24, progress=False)
    peak = tracemalloc.get_traced_memory()[1]
  finally:
    tracemalloc.stop()
  assert peak < 32 * 2**20, peak  # the whole run's index alone would be 256 MiB


def test_index_batches_cover_the_shards_in_order():
  from jaxdiff.bulk.batches import index_batches

  todo = [(0, 5), (10, 12), (20, 27)]
  got = list(index_batches(todo, 4))
  assert [len(b) for b in got] == [4, 4, 4, 2] and all(b.dtype == np.int32 for b in got)
  assert np.concatenate(got).tolist() == [*range(0, 5), 10, 11, *range(20, 27)]
  first = next(index_batches([(0, 2**31 - 1)], 3))  # lazy: nothing of the rest is made
  assert first.tolist() == [0, 1, 2]


# ---- the likelihood command refuses values it cannot use, naming the flag ----------------------


@pytest.mark.parametrize(
  "flag, message",
  [
    ("--num_steps=0", "--num_steps=0"),
    ("--batch_size=0", "--batch_size=0"),
    ("--num_probes=0", "--num_probes=0"),
    ("--max_steps=0", "--max_steps=0"),
    ("--num_examples=-1", "--num_examples=-1"),
  ],
)
def test_likelihood_values_it_cannot_use_are_one_line_naming_the_flag(points_workdir, flag, message, capsys):
  rc = run_cli(eval_cli.main, ["--likelihood", f"--workdir={points_workdir}", flag], prog=eval_cli.PROG)
  err = capsys.readouterr().err
  assert rc == 2 and message in err and len(err.strip().splitlines()) == 1, err
