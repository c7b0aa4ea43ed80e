"""Tests for jaxdiff.data: embedded sets (digits, toy2d) and the TFDS pipeline under
tfds.testing.mock_data (no download). Expected values come from closed forms or from
scikit-learn directly, never from the pipeline itself."""

import itertools
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import jaxdiff.data as data
from jaxdiff.config_utils import load_config_file  # noqa: E402
from jaxdiff.data import DatasetNotFoundError

ROOT = Path(__file__).resolve().parents[1]


def _default_config():
  return load_config_file(str(ROOT / "configs" / "default.py"))


def make_config(name="digits", **data_fields):
  config = _default_config()
  config.data.name = name
  if name.startswith("toy2d/"):
    config.data.num_classes = 0
  for key, value in data_fields.items():
    if key in ("seed",):
      config.seed = value
    elif key == "batch_size":
      config.train.batch_size = value
    else:
      config.data[key] = value
  return config


def take(it, n):
  return list(itertools.islice(it, n))


def rows_sorted(x):
  """Rows of x (flattened per example) in lexicographic order: a multiset fingerprint."""
  flat = np.asarray(x).reshape(len(x), -1)
  return flat[np.lexsort(flat.T[::-1])]


# ------------------------------------------------------------------------------------ digits


def test_digits_arrays_match_sklearn_scaled():
  from sklearn.datasets import load_digits

  bunch = load_digits()
  x, y = data.load_arrays(make_config(), split="all")
  assert x.shape == (1797, 8, 8, 1) and x.dtype == np.float32
  assert y.shape == (1797,) and y.dtype == np.int32
  np.testing.assert_array_equal(x[..., 0], (bunch.images / 16.0 * 2.0 - 1.0).astype(np.float32))
  np.testing.assert_array_equal(y, bunch.target)
  assert x.min() == -1.0 and x.max() == 1.0


def test_digits_split_is_fixed_stratified_and_disjoint():
  from sklearn.datasets import load_digits

  target = load_digits().target
  x_tr, y_tr = data.load_arrays(make_config(seed=0), split="train")
  x_te, y_te = data.load_arrays(make_config(seed=123), split="test")
  x_all, _ = data.load_arrays(make_config(), split="all")
  assert len(x_tr) + len(x_te) == 1797
  # Together the two splits are exactly the whole set (as a multiset of images).
  np.testing.assert_array_equal(rows_sorted(np.concatenate([x_tr, x_te])), rows_sorted(x_all))
  for c in range(10):  # 20% of every class held out
    assert (y_te == c).sum() == round(0.2 * (target == c).sum())
    assert (y_tr == c).sum() == (target == c).sum() - round(0.2 * (target == c).sum())
  # Independent of config.seed.
  x_te0, _ = data.load_arrays(make_config(seed=0), split="test")
  np.testing.assert_array_equal(x_te, x_te0)
  info = data.dataset_info(make_config())
  assert info == data.DatasetInfo("digits", "image", (8, 8, 1), 10, len(x_tr))


def test_digits_batches_shapes_ranges_and_label_pairing():
  config = make_config(batch_size=32)
  x_tr, y_tr = data.load_arrays(config, split="train")
  label_of = {row.tobytes(): set() for row in x_tr}
  for row, label in zip(x_tr, y_tr):
    label_of[row.tobytes()].add(int(label))
  for batch in take(data.create_dataset(config, process_index=0, process_count=1), 5):
    assert set(batch) == {"x", "label"}
    assert batch["x"].shape == (32, 8, 8, 1) and batch["x"].dtype == np.float32
    assert batch["label"].shape == (32,) and batch["label"].dtype == np.int32
    assert batch["x"].min() >= -1.0 and batch["x"].max() <= 1.0
    for row, label in zip(batch["x"], batch["label"]):
      assert int(label) in label_of[row.tobytes()]
  unconditional = make_config(num_classes=0, batch_size=8)
  batch = next(data.create_dataset(unconditional, process_index=0, process_count=1))
  assert set(batch) == {"x"}


def test_digits_each_epoch_is_a_permutation_of_the_train_split():
  config = make_config(batch_size=64)
  x_tr, _ = data.load_arrays(config, split="train")
  n = len(x_tr)
  batches = take(data.create_dataset(config, process_index=0, process_count=1), math.ceil(2 * n / 64) + 1)
  stream = np.concatenate([b["x"] for b in batches])
  epoch0, epoch1 = stream[:n], stream[n : 2 * n]
  np.testing.assert_array_equal(rows_sorted(epoch0), rows_sorted(x_tr))
  np.testing.assert_array_equal(rows_sorted(epoch1), rows_sorted(x_tr))
  assert not np.array_equal(epoch0, epoch1)  # reshuffled every epoch
  # A global batch larger than the data set spans several epochs.
  big = next(data.create_dataset(make_config(batch_size=3000), process_index=0, process_count=1))
  np.testing.assert_array_equal(rows_sorted(big["x"][:n]), rows_sorted(x_tr))
  np.testing.assert_array_equal(rows_sorted(big["x"][n : 2 * n]), rows_sorted(x_tr))


def test_digits_deterministic_and_seed_dependent():
  a = take(data.create_dataset(make_config(seed=3, batch_size=16), process_index=0, process_count=1), 4)
  b = take(data.create_dataset(make_config(seed=3, batch_size=16), process_index=0, process_count=1), 4)
  c = take(data.create_dataset(make_config(seed=4, batch_size=16), process_index=0, process_count=1), 4)
  for u, v in zip(a, b):
    np.testing.assert_array_equal(u["x"], v["x"])
    np.testing.assert_array_equal(u["label"], v["label"])
  assert not all(np.array_equal(u["x"], w["x"]) for u, w in zip(a, c))


@pytest.mark.parametrize("start_step", [1, 22, 23, 45, 1000])
def test_digits_resume_equals_skipping(start_step):
  config = make_config(batch_size=64)  # 1438 / 64: steps 22 and 45 span two epochs
  fresh = data.create_dataset(config, process_index=0, process_count=1)
  expected = take(itertools.islice(fresh, start_step, None), 3)
  resumed = take(data.create_dataset(config, process_index=0, process_count=1, start_step=start_step), 3)
  for u, v in zip(expected, resumed):
    np.testing.assert_array_equal(u["x"], v["x"])
    np.testing.assert_array_equal(u["label"], v["label"])


def test_digits_two_processes_split_the_global_batch():
  config = make_config(batch_size=48)
  whole = take(data.create_dataset(config, process_index=0, process_count=1, start_step=29), 3)
  p0 = take(data.create_dataset(config, process_index=0, process_count=2, start_step=29), 3)
  p1 = take(data.create_dataset(config, process_index=1, process_count=2, start_step=29), 3)
  for w, a, b in zip(whole, p0, p1):
    assert a["x"].shape == (24, 8, 8, 1)
    np.testing.assert_array_equal(np.concatenate([a["x"], b["x"]]), w["x"])
    np.testing.assert_array_equal(np.concatenate([a["label"], b["label"]]), w["label"])


def test_batch_not_divisible_by_process_count():
  with pytest.raises(ValueError, match=r"batch_size.*multiple of 2|not divisible"):
    data.create_dataset(make_config(batch_size=33), process_index=0, process_count=2)


@pytest.mark.parametrize(
  "fields, field",
  [
    ({"image_size": 16}, "image_size"),
    ({"channels": 3}, "channels"),
    ({"num_classes": 5}, "num_classes"),
    ({"random_flip": True}, "random_flip"),
    ({"split": "validation"}, "split"),
  ],
)
def test_digits_config_validation(fields, field):
  with pytest.raises(ValueError, match=f"config.data.{field}"):
    data.dataset_info(make_config(**fields))
  with pytest.raises(ValueError, match=f"config.data.{field}"):
    data.create_dataset(make_config(**fields), process_index=0, process_count=1)


def test_unknown_name():
  with pytest.raises(ValueError, match="config.data.name"):
    data.dataset_info(make_config("imagenet"))
  with pytest.raises(ValueError, match="s_curve"):
    data.dataset_info(make_config("toy2d/spiral"))


# ------------------------------------------------------------------------------------ toy2d


def test_toy2d_shapes_and_geometry():
  n = 3000
  for name in data.TOY2D_NAMES:
    x = data.sample_toy2d(name, n, 0)
    assert x.shape == (n, 2) and x.dtype == np.float32 and np.isfinite(x).all()
    assert np.abs(x).max() < 1.05, name
  # s_curve: x = sin t, z = sign(t)(cos t - 1) (before / 2.5) -> (z + sign t)^2 + x^2 = 1.
  p = data.sample_toy2d("s_curve", n, 1) * 2.5
  resid = np.minimum(np.abs(np.hypot(p[:, 0], p[:, 1] + 1) - 1), np.abs(np.hypot(p[:, 0], p[:, 1] - 1) - 1))
  assert resid.max() < 0.6 and np.median(resid) < 0.12
  # swiss roll: radius t in [1.5 pi, 4.5 pi] (before / 16), angle = t (mod 2 pi).
  p = data.sample_toy2d("swiss_roll", n, 2) * 16
  r = np.hypot(p[:, 0], p[:, 1])
  assert r.min() > 1.5 * np.pi - 2.5 and r.max() < 4.5 * np.pi + 2.5
  ang = np.angle(np.exp(1j * (np.arctan2(p[:, 1], p[:, 0]) - r)))
  assert np.median(np.abs(ang)) < 0.6  # noise 0.5 per axis; a wrong roll gives ~pi/2
  # moons: label 0 on the unit circle (upper half), label 1 on the circle around (1, 0.5).
  x, y = data.sample_toy2d("moons", n, 3, with_labels=True)
  p = x * 1.75 + np.array([0.5, 0.25])
  d0 = np.abs(np.hypot(p[:, 0], p[:, 1]) - 1)
  d1 = np.abs(np.hypot(p[:, 0] - 1, p[:, 1] - 0.5) - 1)
  assert set(np.unique(y)) == {0, 1} and abs((y == 1).mean() - 0.5) < 0.01
  assert d0[y == 0].max() < 0.3 and d1[y == 1].max() < 0.3
  assert p[y == 0, 1].min() > -0.3 and p[y == 1, 1].max() < 0.8
  # 8gaussians: label k, centre 0.8 (cos, sin)(2 pi k / 8), std 0.05.
  x, y = data.sample_toy2d("8gaussians", n, 4, with_labels=True)
  centres = 0.8 * np.stack([np.cos(2 * np.pi * y / 8), np.sin(2 * np.pi * y / 8)], axis=1)
  dev = x - centres
  assert np.abs(dev).max() < 0.05 * 5.5 and abs(dev.std() - 0.05) < 0.005
  assert np.bincount(y, minlength=8).min() > n / 8 * 0.7
  # checkerboard: every point in a cell (i, j) of the 4x4 board on [-1, 1]^2 with i + j even.
  x = data.sample_toy2d("checkerboard", n, 5)
  cells = np.floor((x + 1) / 0.5).astype(int)
  assert ((cells >= 0) & (cells <= 3)).all() and (cells.sum(axis=1) % 2 == 0).all()
  assert len({tuple(c) for c in cells}) == 8


def test_sample_toy2d_keys_and_determinism():
  import jax

  a = data.sample_toy2d("moons", 100, 7)
  np.testing.assert_array_equal(a, data.sample_toy2d("toy2d/moons", 100, 7))
  assert not np.array_equal(a, data.sample_toy2d("moons", 100, 8))
  k = jax.random.key(1)
  np.testing.assert_array_equal(data.sample_toy2d("s_curve", 50, k), data.sample_toy2d("s_curve", 50, k))
  assert not np.array_equal(
    data.sample_toy2d("s_curve", 50, k), data.sample_toy2d("s_curve", 50, jax.random.key(2))
  )
  legacy = data.sample_toy2d("s_curve", 50, jax.random.PRNGKey(1))
  assert legacy.shape == (50, 2)
  np.testing.assert_array_equal(
    data.sample_toy2d("checkerboard", 20, (1, 2)), data.sample_toy2d("checkerboard", 20, (1, 2))
  )


def test_toy2d_endless_stream_resume_processes_and_freshness():
  config = make_config("toy2d/s_curve", batch_size=64)
  assert data.dataset_info(config) == data.DatasetInfo("toy2d/s_curve", "points", (2,), 0, None)
  fresh = take(data.create_dataset(config, process_index=0, process_count=1), 6)
  assert all(set(b) == {"x"} and b["x"].shape == (64, 2) and b["x"].dtype == np.float32 for b in fresh)
  assert len({b["x"].tobytes() for b in fresh}) == 6  # new points every step
  resumed = take(data.create_dataset(config, process_index=0, process_count=1, start_step=4), 2)
  for u, v in zip(fresh[4:], resumed):
    np.testing.assert_array_equal(u["x"], v["x"])
  p0 = take(data.create_dataset(config, process_index=0, process_count=2), 2)
  p1 = take(data.create_dataset(config, process_index=1, process_count=2), 2)
  for w, a, b in zip(fresh, p0, p1):
    np.testing.assert_array_equal(np.concatenate([a["x"], b["x"]]), w["x"])
  other = next(
    data.create_dataset(make_config("toy2d/s_curve", batch_size=64, seed=1), process_index=0, process_count=1)
  )
  assert not np.array_equal(other["x"], fresh[0]["x"])


def test_toy2d_fixed_set_with_labels():
  config = make_config("toy2d/moons", batch_size=50, toy2d_num_points=120, num_classes=2)
  info = data.dataset_info(config)
  assert info == data.DatasetInfo("toy2d/moons", "points", (2,), 2, 120)
  x, y = data.load_arrays(config)
  assert x.shape == (120, 2) and y.shape == (120,)
  x2, _ = data.load_arrays(config)
  np.testing.assert_array_equal(x, x2)
  batches = take(data.create_dataset(config, process_index=0, process_count=1), 5)
  stream_x = np.concatenate([b["x"] for b in batches])
  stream_y = np.concatenate([b["label"] for b in batches])
  for e in range(2):  # each epoch of 120 points is a permutation of the fixed set, labels kept
    sl = slice(120 * e, 120 * (e + 1))
    np.testing.assert_array_equal(
      rows_sorted(np.column_stack([stream_x[sl], stream_y[sl]])), rows_sorted(np.column_stack([x, y]))
    )
  resumed = next(data.create_dataset(config, process_index=0, process_count=1, start_step=3))
  np.testing.assert_array_equal(resumed["x"], batches[3]["x"])


def test_toy2d_validation():
  with pytest.raises(ValueError, match="config.data.num_classes"):
    data.dataset_info(make_config("toy2d/s_curve", num_classes=10))
  with pytest.raises(ValueError, match="config.data.num_classes=8"):
    data.dataset_info(make_config("toy2d/8gaussians", num_classes=3))
  with pytest.raises(ValueError, match="toy2d_num_points"):
    data.dataset_info(make_config("toy2d/moons", toy2d_num_points=-1))
  with pytest.raises(ValueError, match="sample_toy2d"):
    data.load_arrays(make_config("toy2d/moons"))


# ----------------------------------------------------------------------------- partial configs
# The data functions also take partial configs (e.g. evaluation.digits' {"data": {"name": "digits"}},
# an old workdir's config.json). A field the data section leaves out takes the package default,
# except num_classes (0: no labels, not the digits recipe's 10) and, for TFDS, image_size / channels
# (0: refused). These pin that a partial section means the same as the full config it stands for.


def _same_batches(a, b, n=3):
  for u, v in zip(take(a, n), take(b, n), strict=True):
    assert u.keys() == v.keys()
    for key in u:
      np.testing.assert_array_equal(u[key], v[key])


def _partial(data_section, seed=3, batch_size=16):
  import ml_collections

  return ml_collections.ConfigDict({"seed": seed, "train": {"batch_size": batch_size}, "data": data_section})


@pytest.mark.parametrize(
  "section, full_fields",
  [
    ({"name": "digits"}, {"num_classes": 0}),  # a section without num_classes has no labels
    ({"name": "digits", "num_classes": 10}, {}),
    ({"name": "digits", "cond": "sr"}, {"num_classes": 0, "cond": "sr"}),
    ({"name": "toy2d/s_curve"}, {}),
    ({"name": "toy2d/moons", "toy2d_num_points": 50}, {"toy2d_num_points": 50}),
    (
      {"name": "toy2d/moons", "toy2d_num_points": 50, "num_classes": 2},
      {"toy2d_num_points": 50, "num_classes": 2},
    ),
  ],
)
def test_partial_data_section_means_the_full_config(section, full_fields):
  partial = _partial(section)
  full = make_config(section["name"], seed=3, batch_size=16, **full_fields)
  info = data.dataset_info(partial)
  assert info == data.dataset_info(full)
  assert info.num_classes == full.data.num_classes
  assert data.dataset_info(
    partial, split="test" if section["name"] == "digits" else None
  ) == data.dataset_info(full, split="test" if section["name"] == "digits" else None)
  _same_batches(
    data.create_dataset(partial, process_index=0, process_count=1, start_step=2),
    data.create_dataset(full, process_index=0, process_count=1, start_step=2),
  )
  if info.num_examples is not None:  # digits / a fixed toy2d set
    for split in ("train", "test") if section["name"] == "digits" else ("train",):
      for a, b in zip(
        data.load_arrays(partial, split=split), data.load_arrays(full, split=split), strict=True
      ):
        np.testing.assert_array_equal(a, b)
  # a plain nested dict is a partial config too
  assert data.dataset_info({"seed": 3, "data": section}) == info


def test_partial_data_section_fallbacks():
  from jaxdiff.data import base, derived_inputs

  assert data.dataset_info({"data": {"name": "digits"}}).num_classes == 0  # package default: 10
  assert data.dataset_info({"data": {"name": "toy2d/8gaussians"}}).num_classes == 0
  tfds = base.complete_config({"data": {"name": "tfds/mnist"}}).data
  assert (tfds.image_size, tfds.channels, tfds.num_classes) == (0, 0, 0)
  digits = base.complete_config({"data": {"name": "digits"}}).data
  assert (digits.image_size, digits.channels, digits.split, digits.cond) == (8, 1, "train", "")
  # evaluation.digits reads the splits through a name-only section
  from jaxdiff.evaluation.digits import load_digits_splits

  for got, split in zip(load_digits_splits(), ("train", "test"), strict=True):
    for a, b in zip(got, data.load_arrays(make_config(), split=split), strict=True):
      np.testing.assert_array_equal(a, b)
  # conditioning takes partial data sections (plain dicts or ConfigDicts) the same way
  x = np.linspace(-1, 1, 4 * 64, dtype=np.float32).reshape(4, 8, 8, 1)
  batch = {"x": x, "label": np.arange(4, dtype=np.int32)}
  full = make_config(cond="sr").data
  np.testing.assert_array_equal(
    derived_inputs.add_conditioning(batch, {"cond": "sr"})["x_cond"],
    derived_inputs.add_conditioning(batch, full)["x_cond"],
  )
  assert derived_inputs.add_conditioning(batch, {"name": "digits"}) is batch
  assert (
    derived_inputs.provided_inputs({"cond": "sr"}) == derived_inputs.provided_inputs(full) == {"x_cond": 1}
  )
  assert derived_inputs.cond_kind({}) == ""


# ------------------------------------------------------------------------------------ helpers


def test_to_global_builds_sharded_arrays():
  import jax
  from jax.sharding import Mesh, NamedSharding
  from jax.sharding import PartitionSpec as P

  mesh = Mesh(np.array(jax.devices()), ("data",))
  sharding = NamedSharding(mesh, P("data"))
  b = 4 * len(jax.devices())
  batch = next(data.create_dataset(make_config(batch_size=b), process_index=0, process_count=1))
  out = data.to_global(batch, sharding)
  assert set(out) == {"x", "label"}
  assert isinstance(out["x"], jax.Array) and out["x"].shape == (b, 8, 8, 1)
  assert out["x"].sharding == sharding
  np.testing.assert_array_equal(np.asarray(out["x"]), batch["x"])
  np.testing.assert_array_equal(np.asarray(out["label"]), batch["label"])


def test_embedded_data_never_imports_tensorflow():
  code = (
    "import sys, jaxdiff.data as d, importlib.util\n"
    f"spec = importlib.util.spec_from_file_location('c', {str(ROOT / 'configs' / 'default.py')!r})\n"
    "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m); c = m.get_config()\n"
    "next(d.create_dataset(c, process_index=0, process_count=1))\n"
    "c.data.name = 'toy2d/moons'; c.data.num_classes = 0\n"
    "next(d.create_dataset(c, process_index=0, process_count=1))\n"
    "assert 'tensorflow' not in sys.modules, 'tensorflow imported'\n"
    "print('ok')\n"
  )
  env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
  assert out.returncode == 0 and "ok" in out.stdout, out.stderr[-2000:]


def test_preview_function_and_cli(tmp_path):
  from PIL import Image

  path = data.preview(make_config(), str(tmp_path / "digits.png"))
  # 64 digits upscaled x8 in an 8 x 8 grid with 4-pixel grey separators.
  assert Image.open(path).size == (8 * 68 + 4, 8 * 68 + 4)
  path = data.preview(make_config("toy2d/8gaussians", num_classes=8), str(tmp_path / "g.png"), num=500)
  assert Image.open(path).size[0] > 100
  import jaxdiff.data.preview  # noqa: F401  (rebinds the package attribute to the module)

  path = data.preview(make_config(), str(tmp_path / "again.png"), num=4)
  assert Image.open(path).size == (2 * 68 + 4, 2 * 68 + 4)
  out = tmp_path / "cli.png"
  env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
  res = subprocess.run(
    [
      sys.executable,
      "-m",
      "jaxdiff.data.preview",
      f"--config={ROOT / 'configs' / 'default.py'}",
      "--config.data.name=toy2d/s_curve",
      "--config.data.num_classes=0",
      f"--out={out}",
      "--num=300",
    ],
    capture_output=True,
    text=True,
    env=env,
    timeout=120,
    cwd=str(ROOT),
  )
  assert res.returncode == 0, res.stderr[-2000:]
  assert out.exists() and Image.open(out).format == "PNG"
  bad = subprocess.run(
    [
      sys.executable,
      "-m",
      "jaxdiff.data.preview",
      f"--config={ROOT / 'configs' / 'default.py'}",
      "--config.data.name=toy2d/s_curve",
      f"--out={out}",
    ],
    capture_output=True,
    text=True,
    env=env,
    timeout=120,
    cwd=str(ROOT),
  )
  assert bad.returncode != 0 and "config.data.num_classes" in bad.stderr
  assert "Traceback" not in bad.stderr


# ------------------------------------------------------------------------------------ TFDS

TRAIN, TEST = 202, 40
SPLIT_OFFSET = {"train": 0, "test": 10_000}


def mnist_pattern(i):
  """The recognisable 28x28x1 uint8 image of example i: rows 0-1 encode i (the same in every
  column, so mirroring keeps them), rows 2.. are (37 c + 11 r + i) mod 256 (left/right asymmetric)."""
  r, c = np.meshgrid(np.arange(28), np.arange(28), indexing="ij")
  img = (37 * c + 11 * r + i) % 256
  img[0, :] = i // 256
  img[1, :] = i % 256
  return img.astype(np.uint8)[..., None]


def index_of(x):
  """Recovers example indices from float images in [-1, 1] (rows 0 and 1)."""
  u = np.round((np.asarray(x) + 1) * 127.5).astype(np.int64)
  return u[:, 0, 0, 0] * 256 + u[:, 1, 0, 0]


@pytest.fixture(scope="module")
def tfds_mod():
  tfds = pytest.importorskip("tensorflow_datasets")
  from jaxdiff.data import tfds_pipeline

  tfds_pipeline.import_tf()
  return tfds


@pytest.fixture(scope="module")
def mnist_meta(tfds_mod, tmp_path_factory):
  """A data_dir holding only mnist's metadata (split sizes 202 / 40), as a prepared set has."""
  tfds = tfds_mod
  root = tmp_path_factory.mktemp("tfds_meta")
  builder = tfds.builder("mnist", data_dir=str(root))
  template = tfds.core.ShardedFileTemplate(
    data_dir=builder.data_path,
    template="{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}",
    dataset_name="mnist",
    split="train",
    filetype_suffix="tfrecord",
  )
  builder.info.set_splits(
    tfds.core.SplitDict(
      [
        tfds.core.SplitInfo(
          name=s, shard_lengths=[n], num_bytes=0, filename_template=template.replace(split=s)
        )
        for s, n in (("train", TRAIN), ("test", TEST))
      ]
    )
  )
  builder.data_path.mkdir(parents=True, exist_ok=True)
  builder.info.write_to_directory(builder.data_path)
  return str(root)


def _pattern_as_dataset(self, split, decoders=None, read_config=None, shuffle_files=False):
  """Mocked reader: honours (sub)splits and decoders; example i is mnist_pattern(i), label i % 10."""
  import tensorflow as tf
  from tensorflow_datasets.core import splits as splits_lib

  instruction = (
    split if isinstance(split, splits_lib.AbstractSplit) else splits_lib.AbstractSplit.from_spec(split)
  )
  parts = []
  for a in instruction.to_absolute(self.info.splits):
    stop = a.to if a.to is not None else self.info.splits[a.splitname].num_examples
    off = SPLIT_OFFSET[a.splitname]
    parts.append(tf.data.Dataset.range(off + (a.from_ or 0), off + stop))
  ds = parts[0]
  for p in parts[1:]:
    ds = ds.concatenate(p)
  r, c = tf.meshgrid(tf.range(28, dtype=tf.int64), tf.range(28, dtype=tf.int64), indexing="ij")

  def make(i):
    img = tf.math.floormod(37 * c + 11 * r + i, 256)
    img = tf.concat([tf.fill([1, 28], i // 256), tf.fill([1, 28], i % 256), img[2:]], axis=0)
    img = tf.cast(img, tf.uint8)[..., None]
    if decoders and "image" in decoders:
      img = tf.io.encode_png(img)
    return {"image": img, "label": i % 10}

  return ds.map(make)


@pytest.fixture
def pattern_mnist(tfds_mod, mnist_meta):
  with tfds_mod.testing.mock_data(
    policy=tfds_mod.testing.MockPolicy.USE_FILES, data_dir=mnist_meta, as_dataset_fn=_pattern_as_dataset
  ):
    yield


def mnist_config(**fields):
  base = dict(image_size=28, channels=1, num_classes=10, data_dir="/unused", shuffle_buffer=64, batch_size=16)
  base.update(fields)
  return make_config("tfds/mnist", **base)


def test_tfds_batches_shapes_values_and_labels(pattern_mnist):
  config = mnist_config()
  assert data.dataset_info(config) == data.DatasetInfo("tfds/mnist", "image", (28, 28, 1), 10, TRAIN)
  for batch in take(data.create_dataset(config, process_index=0, process_count=1), 3):
    assert batch["x"].shape == (16, 28, 28, 1) and batch["x"].dtype == np.float32
    assert batch["label"].shape == (16,) and batch["label"].dtype == np.int32
    assert batch["x"].min() >= -1.0 and batch["x"].max() <= 1.0
    idx = index_of(batch["x"])
    np.testing.assert_array_equal(batch["label"], idx % 10)
    expected = np.stack([mnist_pattern(i) for i in idx]).astype(np.float32) / 127.5 - 1.0
    np.testing.assert_allclose(batch["x"], expected, atol=1e-6)


def _first_epoch_indices(config, n, process_index, process_count):
  b = config.train.batch_size // process_count
  batches = take(
    data.create_dataset(config, process_index=process_index, process_count=process_count),
    math.ceil(2 * n / b) + 1,
  )
  return np.concatenate([index_of(x["x"]) for x in batches])


def test_tfds_epochs_are_permutations_and_deterministic(pattern_mnist):
  config = mnist_config()
  stream = _first_epoch_indices(config, TRAIN, 0, 1)
  assert sorted(stream[:TRAIN]) == list(range(TRAIN))
  assert sorted(stream[TRAIN : 2 * TRAIN]) == list(range(TRAIN))
  assert not np.array_equal(stream[:TRAIN], stream[TRAIN : 2 * TRAIN])
  np.testing.assert_array_equal(stream, _first_epoch_indices(config, TRAIN, 0, 1))
  assert not np.array_equal(stream, _first_epoch_indices(mnist_config(seed=9), TRAIN, 0, 1))
  test_stream = _first_epoch_indices(mnist_config(split="test"), TEST, 0, 1)
  assert sorted(test_stream[:TEST]) == [SPLIT_OFFSET["test"] + i for i in range(TEST)]


def test_tfds_two_processes_read_disjoint_shares(pattern_mnist):
  config = mnist_config()
  half = TRAIN // 2
  s0 = _first_epoch_indices(config, half, 0, 2)[:half]
  s1 = _first_epoch_indices(config, half, 1, 2)[:half]
  assert len(set(s0)) == half and len(set(s1)) == half
  assert not set(s0) & set(s1)
  assert set(s0) | set(s1) == set(range(TRAIN))
  batch = next(data.create_dataset(config, process_index=1, process_count=2))
  assert batch["x"].shape == (8, 28, 28, 1)


@pytest.mark.parametrize("start_step", [5, 13, 26])
def test_tfds_resume_equals_skipping(pattern_mnist, start_step):
  # 101 examples per process, 8 per batch: steps 13 and 26 start inside epochs 1 and 2.
  config = mnist_config(random_flip=True)
  fresh = take(data.create_dataset(config, process_index=1, process_count=2), start_step + 3)
  resumed = take(data.create_dataset(config, process_index=1, process_count=2, start_step=start_step), 3)
  for u, v in zip(fresh[start_step:], resumed):
    np.testing.assert_array_equal(u["x"], v["x"])
    np.testing.assert_array_equal(u["label"], v["label"])


def test_tfds_resume_far_into_training(pattern_mnist):
  # Step 100000 is epoch ~7920: built directly (no replay), and consistent with step 99998.
  config = mnist_config(random_flip=True)
  a = take(data.create_dataset(config, process_index=0, process_count=2, start_step=99_998), 3)
  b = take(data.create_dataset(config, process_index=0, process_count=2, start_step=100_000), 1)
  np.testing.assert_array_equal(a[2]["x"], b[0]["x"])
  np.testing.assert_array_equal(a[2]["label"], b[0]["label"])


def test_tensorflow_sees_no_accelerator(tfds_mod):
  import tensorflow as tf

  assert {d.device_type for d in tf.config.get_visible_devices()} == {"CPU"}


def test_tfds_random_flip_mirrors_whole_images(pattern_mnist):
  config = mnist_config(random_flip=True, batch_size=64)
  flipped = kept = 0
  for batch in take(data.create_dataset(config, process_index=0, process_count=1), 2):
    for x, i in zip(batch["x"], index_of(batch["x"])):
      original = mnist_pattern(i).astype(np.float32) / 127.5 - 1.0
      if np.array_equal(x, original):
        kept += 1
      else:
        np.testing.assert_array_equal(x, original[:, ::-1])
        flipped += 1
  assert flipped > 20 and kept > 20
  plain = next(data.create_dataset(mnist_config(batch_size=64), process_index=0, process_count=1))
  for x, i in zip(plain["x"], index_of(plain["x"])):
    np.testing.assert_array_equal(x, mnist_pattern(i).astype(np.float32) / 127.5 - 1.0)


def _jax_resize(images_uint8, size):
  """Independent reference: jax.image.resize (linear, antialiased) of uint8 images, to [-1, 1]."""
  import jax

  x = jax.image.resize(
    np.asarray(images_uint8, np.float32),
    (size, size, images_uint8.shape[-1]),
    method="linear",
    antialias=True,
  )
  return np.clip(np.asarray(x), 0, 255) / 127.5 - 1.0


@pytest.mark.parametrize("size", [14, 32])
def test_tfds_resize_matches_reference(pattern_mnist, size):
  batch = next(data.create_dataset(mnist_config(image_size=size), process_index=0, process_count=1))
  assert batch["x"].shape == (16, size, size, 1)
  assert batch["x"].min() >= -1.0 and batch["x"].max() <= 1.0
  same = next(data.create_dataset(mnist_config(), process_index=0, process_count=1))
  for x, i in zip(batch["x"], index_of(same["x"])):  # same seed: same example order
    np.testing.assert_allclose(x, _jax_resize(mnist_pattern(i), size), atol=2e-3)


def test_tfds_partial_data_section(pattern_mnist):
  section = {
    "name": "tfds/mnist",
    "data_dir": "/unused",
    "image_size": 28,
    "channels": 1,
    "shuffle_buffer": 64,
  }
  partial = _partial(section)
  full = mnist_config(num_classes=0, seed=3)
  assert (
    data.dataset_info(partial)
    == data.dataset_info(full)
    == data.DatasetInfo("tfds/mnist", "image", (28, 28, 1), 0, TRAIN)
  )
  _same_batches(
    data.create_dataset(partial, process_index=0, process_count=1),
    data.create_dataset(full, process_index=0, process_count=1),
  )
  # a TFDS section must give its image size and channels (not the digits' 8x8x1)
  with pytest.raises(ValueError, match="config.data.image_size=0"):
    data.dataset_info(_partial({k: v for k, v in section.items() if k != "image_size"}))
  with pytest.raises(ValueError, match="config.data.channels=0"):
    data.dataset_info(_partial({k: v for k, v in section.items() if k != "channels"}))


def test_tfds_config_validation(pattern_mnist):
  with pytest.raises(ValueError, match="config.data.channels=1"):
    data.dataset_info(mnist_config(channels=3))
  with pytest.raises(ValueError, match="config.data.num_classes=10"):
    data.dataset_info(mnist_config(num_classes=5))
  with pytest.raises(ValueError, match="config.data.split"):
    data.dataset_info(mnist_config(split="validation"))
  with pytest.raises(ValueError, match="not divisible"):
    data.create_dataset(mnist_config(batch_size=15), process_index=0, process_count=2)


def test_tfds_celeba_center_crop_then_resize(tfds_mod):
  r, c = np.meshgrid(np.arange(218), np.arange(178), indexing="ij")
  face = np.stack([(r + 2 * c) % 256, (3 * r + c) % 256, (r * c) % 256], axis=-1).astype(np.uint8)

  def as_dataset(self, split, decoders=None, read_config=None, shuffle_files=False):
    import tensorflow as tf

    img = tf.constant(face)
    if decoders and "image" in decoders:
      img = tf.io.encode_png(img)
    return tf.data.Dataset.from_tensors({"image": img}).repeat(6)

  with tfds_mod.testing.mock_data(as_dataset_fn=as_dataset):
    config = make_config(
      "tfds/celeb_a", image_size=178, channels=3, num_classes=0, center_crop=True, batch_size=4
    )
    batch = next(data.create_dataset(config, process_index=0, process_count=1))
    assert set(batch) == {"x"}
    crop = face[20:198]  # (218 - 178) / 2 = 20 rows cut at the top and at the bottom
    for x in batch["x"]:
      np.testing.assert_allclose(x, crop.astype(np.float32) / 127.5 - 1.0, atol=1e-6)
    config.data.image_size = 64
    assert data.dataset_info(config).shape == (64, 64, 3)
    small = next(data.create_dataset(config, process_index=0, process_count=1))["x"]
    assert small.shape == (4, 64, 64, 3)
    np.testing.assert_allclose(small[0], _jax_resize(crop, 64), atol=2e-3)
    with pytest.raises(ValueError, match="num_classes=0"):
      data.dataset_info(make_config("tfds/celeb_a", image_size=64, channels=3, num_classes=10))


def test_tfds_default_mock_cifar10(tfds_mod):
  with tfds_mod.testing.mock_data(num_examples=20):
    config = make_config(
      "tfds/cifar10", image_size=32, channels=3, num_classes=10, batch_size=8, random_flip=True
    )
    batches = take(data.create_dataset(config, process_index=0, process_count=1), 4)
    for b in batches:
      assert b["x"].shape == (8, 32, 32, 3) and b["x"].dtype == np.float32
      assert b["x"].min() >= -1 and b["x"].max() <= 1
      assert ((0 <= b["label"]) & (b["label"] < 10)).all()


@pytest.fixture(scope="module")
def prepared_dir(tfds_mod, tmp_path_factory):
  """A real prepared TFDS data set (no mock): 150 + 30 tiny images built offline in a tmp dir.

  Example i is an 8x8x3 image whose row 0 stores i (the same in every column) and label i % 10."""
  tfds = tfds_mod

  class JaxdiffTestPatterns(tfds.core.GeneratorBasedBuilder):
    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
      return tfds.core.DatasetInfo(
        builder=self,
        features=tfds.features.FeaturesDict(
          {"image": tfds.features.Image(shape=(8, 8, 3)), "label": tfds.features.ClassLabel(num_classes=10)}
        ),
      )

    def _split_generators(self, dl_manager):
      return {"train": self._generate_examples(0, 150), "test": self._generate_examples(1000, 30)}

    def _generate_examples(self, start, n):
      rng = np.random.default_rng(start)
      for i in range(start, start + n):
        img = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
        img[0, :, 0], img[0, :, 1] = i // 256, i % 256
        yield i, {"image": img, "label": i % 10}

  root = tmp_path_factory.mktemp("tfds_prepared")
  JaxdiffTestPatterns(data_dir=str(root)).download_and_prepare()
  return str(root)


def test_tfds_real_prepared_dataset(prepared_dir):
  config = make_config(
    "tfds/jaxdiff_test_patterns",
    image_size=8,
    channels=3,
    num_classes=10,
    data_dir=prepared_dir,
    random_flip=True,
    batch_size=20,
    shuffle_buffer=50,
  )
  assert data.dataset_info(config).num_examples == 150

  def ids(batches):
    u = np.round((np.concatenate([b["x"] for b in batches])[:, 0, 0, :2] + 1) * 127.5).astype(int)
    return u[:, 0] * 256 + u[:, 1]

  shares = []
  for p in range(2):
    batches = take(data.create_dataset(config, process_index=p, process_count=2), 15)  # 2 epochs
    i = ids(batches)
    np.testing.assert_array_equal(np.concatenate([b["label"] for b in batches]), i % 10)
    assert sorted(i[:75]) == sorted(set(i[:75])) and sorted(i[75:150]) == sorted(i[:75])
    shares.append(set(i[:75].tolist()))
    resumed = take(data.create_dataset(config, process_index=p, process_count=2, start_step=5), 2)
    for u, v in zip(batches[5:], resumed):
      np.testing.assert_array_equal(u["x"], v["x"])
  assert not shares[0] & shares[1] and shares[0] | shares[1] == set(range(150))
  with pytest.raises(ValueError, match="config.data.split"):
    data.dataset_info(
      make_config(
        "tfds/jaxdiff_test_patterns", image_size=8, channels=3, data_dir=prepared_dir, split="validation"
      )
    )


def test_tfds_missing_dataset_error(tfds_mod, tmp_path):
  empty = tmp_path / "empty_tfds"
  empty.mkdir()
  config = make_config("tfds/mnist", image_size=28, channels=1, data_dir=str(empty))
  for call in (
    lambda: data.dataset_info(config),
    lambda: data.create_dataset(config, process_index=0, process_count=1),
  ):
    with pytest.raises(DatasetNotFoundError) as err:
      call()
    message = str(err.value)
    assert "tfds build mnist" in message and str(empty) in message
    assert "--config.data.data_dir" in message and "gs://" in message
  assert issubclass(DatasetNotFoundError, ValueError)
  with pytest.raises(DatasetNotFoundError, match="not a data set known"):
    data.dataset_info(make_config("tfds/no_such_dataset_xyz", data_dir=str(empty)))


def test_tfds_preview_png(pattern_mnist, tmp_path):
  from PIL import Image

  path = data.preview(mnist_config(random_flip=True), str(tmp_path / "mnist.png"), num=16)
  img = np.asarray(Image.open(path))
  # 16 images of 28 px upscaled x3 in a 4 x 4 grid with 4-pixel grey separators.
  assert img.shape == (4 * 88 + 4, 4 * 88 + 4)
