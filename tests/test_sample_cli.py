"""Bulk sampling (jaxdiff.bulk, sample.py): determinism, shards, resume, labels, multi-device, errors."""

import json
import os
import shutil
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest
from helpers import ROOT, tiny_image_config, tiny_points_config

from jaxdiff import grids, images
from jaxdiff.bulk import SamplingError, check_shard, generate, labels_for, layout, parse_labels, read_shard
from jaxdiff.bulk.sampler_options import grid_times
from jaxdiff.bulk.settings import resolve_run
from jaxdiff.config_sampling import sample_from_config
from jaxdiff.figures import grid_order
from jaxdiff.shards import write_shard

SHARD = 8


@pytest.fixture(scope="module")
def points_workdir(tmp_path_factory):
  """A tiny MLP on the S-curve, trained for 10 steps by the real training loop."""
  from jaxdiff.training import train

  wd = str(tmp_path_factory.mktemp("points") / "run")
  train(tiny_points_config(num_steps=10), wd)
  return wd


def _random_params(abstract, rng):
  """He-style random weights (norm scales near 1) for a network described by jax.eval_shape."""

  def leaf(path, a):
    name = jax.tree_util.keystr(path[-1:])
    if "scale" in name:
      v = 1.0 + 0.1 * rng.standard_normal(a.shape)
    elif "bias" in name:
      v = 0.1 * rng.standard_normal(a.shape)
    else:
      v = rng.standard_normal(a.shape) / np.sqrt(max(1, int(np.prod(a.shape[:-1]))))
    return jax.device_put(v.astype(a.dtype))

  return jax.tree_util.tree_map_with_path(leaf, abstract)


@pytest.fixture(scope="module")
def image_workdir(tmp_path_factory):
  """A tiny class-conditional UNet on 8x8 digits: checkpoint and config.json written exactly as train()
  writes them, with random weights (training, or even initialising, the UNet costs 15-40 s of compile
  on 2 cores; jax.eval_shape gives its structure in well under a second)."""
  from jaxdiff.models import create_model
  from jaxdiff.training import Checkpointer, create_train_state, save_config

  wd = str(tmp_path_factory.mktemp("images") / "run")
  c = tiny_image_config()
  model = create_model(c)
  abstract = jax.eval_shape(lambda: create_train_state(c, model, jax.random.key(0)))
  rng = np.random.default_rng(0)
  state = jax.tree_util.tree_map(lambda a: jax.device_put(np.zeros(a.shape, a.dtype)), abstract)
  state = state.replace(
    params=_random_params(abstract.params, rng), ema_params=_random_params(abstract.params, rng)
  )
  ck = Checkpointer(wd, async_save=False)
  ck.save(state)
  ck.close()
  save_config(c, wd)
  return wd


def _load(out):
  """{"x", "labels", "index"} of every shard in `out`, in index order."""
  names = sorted(n for n in os.listdir(out) if n.endswith(".npz"))
  parts = [read_shard(os.path.join(out, n)) for n in names]
  kind = "images" if "images" in parts[0] else "points"
  return {
    "x": np.concatenate([p[kind] for p in parts]),
    "labels": np.concatenate([p["labels"] for p in parts]),
    "index": np.concatenate([p["index"] for p in parts]),
    "names": names,
  }


def _same_images(a, b):
  """uint8 images equal up to float rounding: XLA may pick other kernels for other batch shapes, so the
  float samples agree to ~1e-6 (measured), which can move a pixel across a rounding boundary."""
  d = np.abs(a.astype(int) - b.astype(int))
  assert d.max() <= 1 and (d > 0).mean() < 0.01, (d.max(), (d > 0).mean())


def _env(**extra):
  env = dict(os.environ)
  env.update({"JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": ROOT}, **extra)
  return env


def _cli(*args, env=None, timeout=240):
  return subprocess.run(
    [sys.executable, os.path.join(ROOT, "sample.py"), *args],
    env=env or _env(),
    capture_output=True,
    text=True,
    timeout=timeout,
  )


def test_points_outputs_and_same_samples_for_any_batch_size(points_workdir, tmp_path):
  a = generate(
    points_workdir,
    str(tmp_path / "a"),
    num_samples=20,
    shard_size=SHARD,
    batch_size=20,
    trajectory=True,
    progress=False,
  )
  b = generate(
    points_workdir, str(tmp_path / "b"), num_samples=20, shard_size=SHARD, batch_size=3, progress=False
  )
  A, B = _load(tmp_path / "a"), _load(tmp_path / "b")
  assert A["names"] == [
    "samples_0000000_0000008.npz",
    "samples_0000008_0000016.npz",
    "samples_0000016_0000020.npz",
  ]
  assert A["x"].dtype == np.float32 and A["x"].shape == (20, 2)
  assert A["labels"].dtype == np.int32 and np.all(A["labels"] == -1)
  assert A["index"].dtype == np.int64 and np.array_equal(A["index"], np.arange(20))
  np.testing.assert_allclose(A["x"], B["x"], rtol=1e-5, atol=1e-5)
  assert len(np.unique(A["x"][:, 0])) == 20  # every sample has its own noise
  for f in ("run.json", "summary.json", "scatter.png", "trajectory.png"):
    assert (tmp_path / "a" / f).stat().st_size > 0, f
  s = json.load(open(tmp_path / "a" / "summary.json"))
  assert s == json.loads(json.dumps(a))
  assert (s["sampler"], s["num_steps"], s["nfe"], s["seed"], s["num_samples"]) == ("ddim", 10, 10, 0, 20)
  assert s["complete"] and s["generated_this_run"] == 20 and s["samples_per_s"] > 0 and s["wall_time_s"] > 0
  assert b["batch_size_per_process"] == 3
  # sample i is exactly what one direct call with the key fold_in(key(seed), i) gives
  from jaxdiff.bulk import restore_model

  config, model, schedule, params, step = restore_model(points_workdir)
  assert step == s["checkpoint_step"] == 10
  for i in (0, 13):
    x = sample_from_config(config, model, schedule, params, jax.random.fold_in(jax.random.key(0), i), 1)
    np.testing.assert_allclose(np.asarray(x)[0], A["x"][i], rtol=1e-5, atol=1e-5)


def test_other_seed_and_raw_params_give_other_samples(points_workdir, tmp_path):
  generate(points_workdir, str(tmp_path / "a"), num_samples=8, shard_size=SHARD, progress=False)
  generate(points_workdir, str(tmp_path / "s"), num_samples=8, shard_size=SHARD, seed=1, progress=False)
  r = generate(
    points_workdir, str(tmp_path / "r"), num_samples=8, shard_size=SHARD, params="raw", progress=False
  )
  a, s, raw = (_load(tmp_path / d)["x"] for d in ("a", "s", "r"))
  assert np.abs(a - s).max() > 1e-3 and np.abs(a - raw).max() > 1e-6
  assert r["params"] == "raw"


def test_resume_skips_complete_shards_and_regenerates_damaged_ones(points_workdir, tmp_path):
  fresh = tmp_path / "fresh"
  generate(points_workdir, str(fresh), num_samples=40, shard_size=SHARD, batch_size=16, progress=False)
  out = tmp_path / "out"
  shutil.copytree(fresh, out)  # a run that got as far as fresh, then:
  names = sorted(n for n in os.listdir(out) if n.endswith(".npz"))
  os.remove(out / names[1])  # ... was killed before shard 1 was written,
  data = (out / names[2]).read_bytes()
  (out / names[2]).write_bytes(data[: len(data) // 2])  # shard 2 is truncated,
  arrays = read_shard(str(out / names[3]))  # shard 3 holds the wrong samples (a valid file, wrong index),
  np.savez(out / names[3], points=arrays["points"], labels=arrays["labels"], index=arrays["index"] + 1)
  (out / f".{names[4]}.p0.tmp").write_bytes(b"half a shard")  # and a temporary file was left behind
  stamp = {n: (out / n).stat().st_mtime_ns for n in (names[0], names[4])}
  os.utime(out / names[0], ns=(1, 1))
  os.utime(out / names[4], ns=(1, 1))
  s = generate(points_workdir, str(out), num_samples=40, shard_size=SHARD, batch_size=5, progress=False)
  assert s["generated_this_run"] == 3 * SHARD and s["reused_samples"] == 2 * SHARD
  assert s["regenerated_shards"] == 2
  assert (out / names[0]).stat().st_mtime_ns == 1 and (out / names[4]).stat().st_mtime_ns == 1, (
    stamp
  )  # untouched
  assert not [n for n in os.listdir(out) if n.endswith(".tmp")]
  for (st, en), n in zip(layout(40, SHARD), names):
    assert check_shard(str(out / n), st, en, "points", (2,), np.full(en - st, -1, np.int32)) is None
  A, B = _load(fresh), _load(out)
  assert A["names"] == B["names"]
  np.testing.assert_allclose(A["x"], B["x"], rtol=1e-5, atol=1e-5)
  # a second rerun has nothing to do and keeps the throughput of the run that generated
  again = generate(points_workdir, str(out), num_samples=40, shard_size=SHARD, progress=False)
  assert again["generated_this_run"] == 0 and again["samples_per_s"] == s["samples_per_s"]
  assert [r["generated"] for r in again["runs"]] == [40, 24, 0]  # fresh (copied), resumed, verified


def test_extending_a_run_replaces_its_partial_last_shard(points_workdir, tmp_path):
  out = tmp_path / "out"
  generate(points_workdir, str(out), num_samples=12, shard_size=SHARD, progress=False)
  assert "samples_0000008_0000012.npz" in os.listdir(out)
  s = generate(points_workdir, str(out), num_samples=20, shard_size=SHARD, progress=False)
  assert s["generated_this_run"] == 12 and s["reused_samples"] == 8
  names = sorted(n for n in os.listdir(out) if n.endswith(".npz"))
  assert names == [
    "samples_0000000_0000008.npz",
    "samples_0000008_0000016.npz",
    "samples_0000016_0000020.npz",
  ]
  assert json.load(open(out / "run.json"))["num_samples"] == 20
  generate(points_workdir, str(tmp_path / "fresh"), num_samples=20, shard_size=SHARD, progress=False)
  np.testing.assert_allclose(_load(out)["x"], _load(tmp_path / "fresh")["x"], rtol=1e-5, atol=1e-5)
  with pytest.raises(SamplingError, match="extended, not shrunk"):
    generate(points_workdir, str(out), num_samples=16, shard_size=SHARD, progress=False)


def test_corrupted_bytes_are_detected_by_the_check(tmp_path):
  x = np.random.default_rng(0).integers(0, 255, (4, 8, 8, 1)).astype(np.uint8)
  labels = np.array([3, 4, 5, 6], np.int32)
  path = write_shard(str(tmp_path), 4, 8, "images", x, labels)
  assert check_shard(path, 4, 8, "images", (8, 8, 1), labels) is None
  assert "labels" in check_shard(path, 4, 8, "images", (8, 8, 1), labels + 1)
  assert "index" in check_shard(path, 0, 4, "images", (8, 8, 1), labels)
  assert "images" in check_shard(path, 4, 8, "images", (8, 8, 3), labels)
  raw = bytearray(open(path, "rb").read())
  at = raw.index(x.tobytes()[:16])  # flip one pixel inside the stored array: the zip CRC catches it
  raw[at + 5] ^= 0xFF
  open(path, "wb").write(bytes(raw))
  assert "unreadable" in check_shard(path, 4, 8, "images", (8, 8, 1), labels)
  assert check_shard(str(tmp_path / "nope.npz"), 4, 8, "images", (8, 8, 1), labels) == "missing"


def test_images_on_four_devices_match_one_device_and_cli_outputs(image_workdir, tmp_path):
  opts = [
    "--num_samples=20",
    f"--shard_size={SHARD}",
    "--sampler=ddim",
    "--eta=1.0",
    "--guidance_scale=2.0",
    "--trajectory",
  ]
  r = _cli(
    f"--workdir={image_workdir}",
    f"--output={tmp_path / 'four'}",
    "--batch_size=8",
    *opts,
    env=_env(XLA_FLAGS="--xla_force_host_platform_device_count=4"),
  )
  assert r.returncode == 0, r.stderr[-3000:]
  assert "20 generated now" in r.stdout
  s4 = json.load(open(tmp_path / "four" / "summary.json"))
  assert s4["devices"] == 4 and s4["batch_size_per_process"] == 8 and s4["labels"] == "uniform"
  assert s4["guidance_scale"] == 2.0 and s4["eta"] == 1.0
  for f in ("grid.png", "trajectory.png"):
    assert (tmp_path / "four" / f).stat().st_size > 0
  kw = dict(num_samples=20, shard_size=SHARD, sampler="ddim", eta=1.0, guidance_scale=2.0, progress=False)
  one = generate(image_workdir, str(tmp_path / "one"), batch_size=5, **kw)
  assert one["devices"] == 1
  A, B = _load(tmp_path / "four"), _load(tmp_path / "one")
  assert A["x"].dtype == np.uint8 and A["x"].shape == (20, 8, 8, 1)
  assert np.array_equal(A["labels"], np.arange(20) % 10) and np.array_equal(A["labels"], B["labels"])
  _same_images(A["x"], B["x"])
  assert len({a.tobytes() for a in A["x"]}) == 20


def test_labels_single_list_and_grid(image_workdir, tmp_path):
  kw = dict(
    num_samples=6, shard_size=SHARD, sampler="ddim", eta=1.0, guidance_scale=2.0, batch_size=5, progress=False
  )
  generate(image_workdir, str(tmp_path / "single"), labels="3", **kw)
  assert np.all(_load(tmp_path / "single")["labels"] == 3)
  generate(image_workdir, str(tmp_path / "list"), labels=[7, 1], **kw)
  L = _load(tmp_path / "list")
  assert L["labels"].tolist() == [7, 1, 7, 1, 7, 1]
  # the same sample number with the same class is the same image, whatever the other labels
  generate(image_workdir, str(tmp_path / "uniform"), labels="uniform", **kw)
  U = _load(tmp_path / "uniform")
  assert U["labels"].tolist() == [0, 1, 2, 3, 4, 5]
  _same_images(U["x"][1], L["x"][1])  # sample 1 has class 1 in both runs
  from PIL import Image

  assert Image.open(tmp_path / "uniform" / "grid.png").size[0] > 8


def test_balanced_labels_give_every_class_the_same_count_or_are_refused(image_workdir, tmp_path):
  config = tiny_image_config()
  for n in (10, 30, 1000):
    settings, _ = resolve_run(config, num_samples=n, labels="balanced")
    counts = np.bincount(settings.labels_of(np.arange(n)), minlength=10)
    assert counts.tolist() == [n // 10] * 10
    assert (
      settings.labels == "uniform"
    )  # the same samples as --labels=uniform: a run can be resumed with either
  for n, nearest in ((25, "--num_samples=30 or 20"), (7, "--num_samples=10,")):
    with pytest.raises(SamplingError, match=nearest) as err:
      resolve_run(config, num_samples=n, labels="balanced")
    assert "--labels=uniform" in str(err.value)
  resolve_run(config, num_samples=25, labels="uniform")  # uniform takes any count
  out = str(tmp_path / "refused")
  with pytest.raises(SamplingError, match="multiple of the model's 10 classes"):
    generate(image_workdir, out, num_samples=15, labels="balanced", progress=False)
  with pytest.raises(SamplingError, match="--keep_latents: the model .* is a pixel-space model"):
    generate(image_workdir, out, num_samples=10, keep_latents=True, progress=False)
  assert not os.path.exists(out)


def test_label_parsing_and_grid_layout():
  assert parse_labels(None, 10) == "uniform" and parse_labels(None, 0) == "none"
  assert (
    parse_labels("3", 10) == (3,) and parse_labels(" 0, 2 ", 10) == (0, 2) and parse_labels(4, 10) == (4,)
  )
  assert parse_labels("None", 10) == "none" and parse_labels([1, 2], 10) == (1, 2)
  assert labels_for("uniform", np.arange(12), 10).tolist() == list(range(10)) + [0, 1]
  assert labels_for((5, 6), np.array([7, 8]), 10).tolist() == [6, 5]
  assert labels_for("none", np.arange(3), 10).tolist() == [-1, -1, -1]
  for bad, match in (("12", "outside"), ("-1", "outside"), ("a,b", "give a class"), (",", "no class")):
    with pytest.raises(SamplingError, match=match):
      parse_labels(bad, 10)
  with pytest.raises(SamplingError, match="unconditional"):
    parse_labels("3", 0)
  order, nrow = grid_order(np.arange(100) % 10, 10, True, 100)  # one row per class
  assert nrow == 10 and (np.arange(100) % 10)[order].tolist() == sorted([i % 10 for i in range(100)])
  order, nrow = grid_order(np.arange(7) % 10, 10, True, 100)
  assert nrow is None and order.tolist() == list(range(7))


def test_errors_are_clear_and_touch_nothing(points_workdir, image_workdir, tmp_path):
  from jaxdiff.training import save_config

  # a workdir without checkpoints (config.json only), a missing workdir, a folder that is no workdir
  bare = tmp_path / "bare"
  bare.mkdir()
  save_config(tiny_points_config(), str(bare))
  with pytest.raises(SamplingError, match="No checkpoints"):
    generate(str(bare), str(tmp_path / "o1"), num_samples=4, progress=False)
  assert sorted(os.listdir(bare)) == ["config.json"] and not (tmp_path / "o1").exists()
  with pytest.raises(SamplingError, match="does not exist"):
    generate(str(tmp_path / "nowhere"), num_samples=4, progress=False)
  with pytest.raises(SamplingError, match="not a jaxdiff training workdir"):
    generate(str(tmp_path), str(tmp_path / "o1"), num_samples=4, progress=False)
  # a checkpoint that does not match its config
  wrong = tmp_path / "wrong"
  shutil.copytree(points_workdir, wrong)
  cfg = json.load(open(wrong / "config.json"))
  cfg["model"]["hidden_dim"] = 48
  json.dump(cfg, open(wrong / "config.json", "w"))
  with pytest.raises(SamplingError, match="different model"):
    generate(str(wrong), str(tmp_path / "o2"), num_samples=4, progress=False)
  assert not (tmp_path / "o2").exists()
  with pytest.raises(SamplingError, match="checkpoint_step=7"):
    generate(points_workdir, str(tmp_path / "o2"), num_samples=4, checkpoint_step=7, progress=False)
  # bad settings
  for kw, match in (
    (dict(sampler="plms"), "Unknown sampler 'plms'"),
    (dict(num_steps=5000), "num_steps"),
    (dict(spacing="odd"), "spacing"),
    (dict(labels="3"), "unconditional"),
    (dict(guidance_scale=3.0), "guidance"),
    (dict(params="best"), "ema"),
    (dict(num_samples=0), "num_samples"),
  ):
    args = dict(num_samples=4, progress=False)
    args.update(kw)
    with pytest.raises(SamplingError, match=match):
      generate(points_workdir, str(tmp_path / "o3"), **args)
  with pytest.raises(SamplingError, match="outside 0..9"):
    generate(image_workdir, str(tmp_path / "o3"), num_samples=4, labels="10", progress=False)
  with pytest.raises(SamplingError, match="null class"):
    generate(
      image_workdir, str(tmp_path / "o3"), num_samples=4, labels="none", guidance_scale=2.0, progress=False
    )
  assert not (tmp_path / "o3").exists()
  # an output folder that belongs to a different run, and one that is not a sample folder
  out = tmp_path / "run"
  generate(points_workdir, str(out), num_samples=8, shard_size=SHARD, progress=False)
  before = {n: (out / n).read_bytes() for n in os.listdir(out)}
  for kw, match in (
    (dict(sampler="dpmpp_2m"), "sampler 'ddim' \\(folder\\) vs 'dpmpp_2m' \\(now\\)"),
    (dict(seed=1), "seed 0 \\(folder\\) vs 1"),
    (dict(shard_size=4), "shard_size"),
    (dict(params="raw"), "params 'ema'"),
  ):
    args = dict(num_samples=8, shard_size=SHARD, progress=False)
    args.update(kw)
    with pytest.raises(SamplingError, match="belongs to a different run.*" + match):
      generate(points_workdir, str(out), **args)
  assert {n: (out / n).read_bytes() for n in os.listdir(out)} == before
  (tmp_path / "mine").mkdir()
  (tmp_path / "mine" / "notes.txt").write_text("keep me")
  with pytest.raises(SamplingError, match="not a jaxdiff sample folder"):
    generate(points_workdir, str(tmp_path / "mine"), num_samples=4, progress=False)
  assert os.listdir(tmp_path / "mine") == ["notes.txt"]


def test_cli_error_exits_2_without_traceback(points_workdir, tmp_path):
  r = _cli(f"--workdir={points_workdir}", "--num_samples=4", "--sampler=nope", f"--output={tmp_path / 'o'}")
  assert r.returncode == 2
  assert "sample.py: error: Unknown sampler 'nope'" in r.stderr and "Traceback" not in r.stderr
  assert not (tmp_path / "o").exists()


def test_two_processes_write_their_own_shards_and_match_one_process(points_workdir, tmp_path):
  with socket.socket() as sock:
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
  out = tmp_path / "mp"
  args = [
    f"--workdir={points_workdir}",
    f"--output={out}",
    "--num_samples=20",
    f"--shard_size={SHARD}",
    "--batch_size=6",
    f"--coordinator_address=127.0.0.1:{port}",
    "--num_processes=2",
  ]
  procs = [
    subprocess.Popen(
      [sys.executable, os.path.join(ROOT, "sample.py"), *args, f"--process_id={i}"],
      env=_env(),
      stdout=subprocess.PIPE,
      stderr=subprocess.PIPE,
      text=True,
    )
    for i in range(2)
  ]
  outs = [p.communicate(timeout=240) for p in procs]
  for p, (o, e) in zip(procs, outs):
    assert p.returncode == 0, e[-3000:]
  assert "jaxdiff sample" in outs[0][0] and "jaxdiff sample" not in outs[1][0]  # process 0 reports
  s = json.load(open(out / "summary.json"))
  assert s["processes"] == 2 and s["generated_this_run"] == 20 and s["complete"]
  assert s["batch_size_per_process"] == 3
  generate(points_workdir, str(tmp_path / "single"), num_samples=20, shard_size=SHARD, progress=False)
  A, B = _load(out), _load(tmp_path / "single")
  assert A["names"] == B["names"]
  np.testing.assert_allclose(A["x"], B["x"], rtol=1e-5, atol=1e-5)


# ---- sampler options, grids and guidance intervals are applied or refused, never dropped ----


def _process_config(process: str):
  c = tiny_points_config()
  c.diffusion.process = process
  return c


@pytest.mark.parametrize(
  "kw, match",
  [
    (dict(sampler="dpmpp_2m", eta=0.5), "dpmpp_2m sampler does not take eta.*ddim, euler_ancestral"),
    (
      dict(sampler="unipc", grid_options={"s_churn": 10.0}),
      "unipc sampler does not take s_churn.*euler, heun",
    ),
    (dict(sampler="ddim", grid_options={"order": 3}), "ddim sampler does not take order.*unipc"),
  ],
)
def test_an_option_the_sampler_does_not_take_is_refused(kw, match):
  with pytest.raises(SamplingError, match=match):
    resolve_run(tiny_points_config(), num_samples=4, **kw)


def test_an_option_the_sampler_does_not_take_is_one_line_from_sample_py(points_workdir, tmp_path):
  r = _cli(
    f"--workdir={points_workdir}",
    "--num_samples=4",
    "--sampler=dpmpp_2m",
    "--eta=0.5",
    f"--output={tmp_path / 'o'}",
  )
  assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
  assert "dpmpp_2m sampler does not take eta" in r.stderr.strip().splitlines()[-1]
  assert not (tmp_path / "o").exists()


def test_karras_flags_apply_to_the_own_grid_of_an_edm_model():
  c = _process_config("edm")
  s, _ = resolve_run(c, num_samples=4, num_steps=12, grid_options={"rho": 3.0, "sigma_max": 40.0})
  want = grids.karras(12, float(c.diffusion.sigma_min), 40.0, 3.0)  # EDM's own grid with those values
  np.testing.assert_allclose(grid_times(c, s), want, rtol=1e-6)
  plain, _ = resolve_run(c, num_samples=4, num_steps=12)
  np.testing.assert_allclose(grid_times(c, plain), grids.karras(12, 0.002, 80.0, 7.0), rtol=1e-6)


def test_shift_applies_to_the_own_grid_of_a_flow_model():
  c = _process_config("flow")
  s, _ = resolve_run(c, num_samples=4, num_steps=9, grid_options={"shift": 3.0})
  # --grid=flow reads SD3's levels as sigma/alpha ratios and back (kept finite at t=1): ~5e-5 apart
  np.testing.assert_allclose(grid_times(c, s), grids.flow(9, 3.0), rtol=1e-4)
  assert not np.allclose(grids.flow(9, 3.0), grids.flow(9, float(c.diffusion.flow_shift)))


@pytest.mark.parametrize(
  "process, kw, match",
  [
    ("edm", dict(spacing="trailing"), "--spacing=trailing applies to discrete \\(vp\\) chains"),
    ("flow", dict(spacing="leading"), "--spacing=leading applies to discrete"),
    ("vp", dict(grid_options={"rho": 3.0}), "--rho is a setting of --grid=karras"),
    ("edm", dict(grid_options={"shift": 3.0}), "--shift is a setting of .*--grid=flow"),
    ("flow", dict(grid_options={"grid": "logsnr", "rho": 5.0}), "--grid=logsnr does not take it"),
    ("edm", dict(grid_options={"sigma_max": -1.0}), "--sigma_max=-1.0 must be a finite number > 0"),
  ],
)
def test_grid_flags_that_would_be_ignored_are_refused(process, kw, match):
  with pytest.raises(SamplingError, match=match):
    resolve_run(_process_config(process), num_samples=4, **kw)


def test_a_grid_leaving_the_trained_noise_range_is_refused():
  c = _process_config("edm")  # trained for sigma in [0.002, 80]
  with pytest.raises(SamplingError, match=r"--grid=flow reaches sigma 22026.*sigma in \[0.002, 80\]"):
    resolve_run(c, num_samples=4, grid_options={"grid": "flow"})
  with pytest.raises(SamplingError, match=r"sigma 500 .*outside the range"):
    resolve_run(c, num_samples=4, grid_options={"grid": "karras", "sigma_max": 500.0})
  for grid in ("karras", "logsnr", "uniform"):  # the grids that stay inside it are taken
    resolve_run(c, num_samples=4, grid_options={"grid": grid})


def test_num_steps_is_capped_by_the_chain_only():
  resolve_run(_process_config("edm"), num_samples=4, num_steps=2000)
  resolve_run(_process_config("flow"), num_samples=4, num_steps=5000)
  with pytest.raises(SamplingError, match="--num_steps=2000 must be between 1 and 1000"):
    resolve_run(_process_config("vp"), num_samples=4, num_steps=2000)


def test_a_guidance_interval_outside_the_time_range_is_refused():
  c = tiny_image_config()
  c.diffusion.process = "edm"
  with pytest.raises(
    SamplingError, match=r"82,579 lies outside this 'edm' model's time range, sigma in \[0.002, 80\]"
  ):
    resolve_run(c, num_samples=4, guidance_scale=3.0, guidance_options={"guidance_interval": "82,579"})
  c.diffusion.process = "vp"  # 5 leading steps: 800, 600, 400, 200, 0
  with pytest.raises(SamplingError, match="holds none of the run's 5 step times"):
    resolve_run(c, num_samples=4, guidance_scale=3.0, guidance_options={"guidance_interval": "410,590"})
  s, _ = resolve_run(c, num_samples=4, guidance_scale=3.0, guidance_options={"guidance_interval": "82,579"})
  assert s.guidance == {"guidance_interval": [82.0, 579.0]}


def test_trajectory_columns_name_continuous_times():
  from jaxdiff.figures import _column_titles

  assert _column_titles(np.array([0.97, 0.5, 0.0123]), np.arange(4)) == [
    "t=0.97",
    "t=0.5",
    "t=0.0123",
    "x0 (final)",
  ]
  assert _column_titles(np.array([999.0, 499.0, 0.0]), np.arange(3)) == ["t=999", "t=499", "t=0"]
  assert _column_titles(np.array([80.0, 2.5, 0.002]), np.arange(3)) == ["t=80", "t=2.5", "t=0.002"]


# ---- float output ------------------------------------------------------------------------------


def test_float_output_holds_the_values_the_uint8_pixels_round(image_workdir, tmp_path):
  kw = dict(num_samples=6, shard_size=SHARD, progress=False, labels="3")
  generate(image_workdir, str(tmp_path / "u8"), **kw)
  s = generate(image_workdir, str(tmp_path / "f32"), output_format="float", **kw)
  assert s["output_format"] == "float"
  px, fl = _load(tmp_path / "u8")["x"], _load(tmp_path / "f32")["x"]
  assert px.dtype == np.uint8 and fl.dtype == np.float32 and fl.shape == px.shape
  np.testing.assert_array_equal(images.to_uint8(fl), px)  # the same samples, unquantised
  levels = (fl.astype(np.float64) + 1.0) * 127.5
  assert np.abs(levels - np.round(levels)).max() > 0.1  # values between the pixel levels are kept
  with pytest.raises(SamplingError, match="output_format 'float' \\(folder\\) vs 'uint8'"):
    generate(image_workdir, str(tmp_path / "f32"), output_format="uint8", **kw)
  generate(image_workdir, str(tmp_path / "f32"), output_format="float", **kw)  # resumes: all reused


def test_float_is_the_default_output_for_non_image_data():
  from jaxdiff.bulk.settings import default_output_format

  c = tiny_image_config()
  assert default_output_format(c) == "uint8"
  c.data.channels = 4  # e.g. the latents of an imported latent model
  assert default_output_format(c) == "float"
  s, _ = resolve_run(c, num_samples=4)
  assert s.sample_format == "float" and s.manifest()["output_format"] == "float"
  c.data.channels, c.data.name = 3, "latents"
  assert default_output_format(c) == "float"
  assert default_output_format(tiny_points_config()) == "float"
  with pytest.raises(SamplingError, match="--output_format=uint8: this model's samples are 2-D points"):
    resolve_run(tiny_points_config(), num_samples=4, output_format="uint8")
  with pytest.raises(SamplingError, match="--output_format='half'"):
    resolve_run(tiny_image_config(), num_samples=4, output_format="half")
  assert "output_format" not in resolve_run(tiny_image_config(), num_samples=4)[0].manifest()  # as before
