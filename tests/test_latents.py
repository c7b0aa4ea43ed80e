"""Encoded latent sets: python -m jaxdiff.latents encode, resuming after a kill, and config.data.name="latents"."""

from __future__ import annotations

import json
import os
import shutil

import jax
import numpy as np
import pytest
from helpers import load_config_file, tiny_image_config

import jaxdiff
from jaxdiff import data, latents
from jaxdiff.data import encoded
from jaxdiff.data.embedded import load_digits_split
from jaxdiff.errors import CheckpointError, ConfigError, DataError, SamplingError
from jaxdiff.interop import save_diffusers_vae
from jaxdiff.models import AutoencoderKL
from jaxdiff.training import latent_space

LAYOUT = dict(
  in_channels=1,
  out_channels=1,
  block_out_channels=(8, 16),
  latent_channels=4,
  norm_num_groups=4,
  scaling_factor=0.5,
  shift_factor=0.25,
  sample_size=8,
)
DIGITS = {"data": {"name": "digits", "image_size": 8, "channels": 1, "num_classes": 10, "split": "test"}}


@pytest.fixture(scope="module")
def vae_dir(tmp_path_factory):
  model = AutoencoderKL(**LAYOUT)
  variables = model.init({"params": jax.random.key(0)}, np.zeros((1, 8, 8, 1), np.float32))
  path = str(tmp_path_factory.mktemp("vae"))
  save_diffusers_vae(model, variables, path)
  return path, model, variables


def _records(out: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  manifest = encoded.read_manifest(out)
  layout = encoded.RecordLayout(
    manifest["latent_shape"], manifest["dtype"], 2 if manifest["preprocessing"]["flip"] else 1
  )
  source = encoded.open_source(out, manifest)
  return layout.unpack(source.__getitems__(list(range(len(source)))))


def test_encoded_set_holds_every_image_posterior_and_label_in_order(vae_dir, tmp_path):
  path, model, variables = vae_dir
  out = str(tmp_path / "enc")
  rc = latents.main(
    ["jaxdiff.latents", "encode", f"--vae={path}", "--config=configs/digits.py", f"--out={out}",
     "--config.data.split=test", "--examples_per_shard=100", "--dtype=float32", "--flip"]
  )  # fmt: skip
  assert rc == 0
  manifest = json.loads(open(os.path.join(out, "manifest.json")).read())
  x, y = load_digits_split("test")
  assert manifest["num_examples"] == len(x) == sum(s["count"] for s in manifest["shards"])
  assert manifest["latent_shape"] == [4, 4, 4] and manifest["vae"]["scaling"]["shift_factor"] == 0.25
  assert len(manifest["vae"]["digest"]) == 16
  labels, means, stds = _records(out)
  np.testing.assert_array_equal(labels, y)
  mean, logvar = model.apply(variables, x, method=model.encode)  # the reference: the module itself
  np.testing.assert_allclose(means[:, 0], mean, atol=1e-5)
  np.testing.assert_allclose(stds[:, 0], np.exp(0.5 * np.asarray(logvar)), rtol=1e-5)
  flipped, _ = model.apply(variables, x[:, :, ::-1], method=model.encode)
  np.testing.assert_allclose(means[:, 1], flipped, atol=1e-5)


def test_encode_resumes_after_a_kill_without_duplicates_or_missing_examples(vae_dir, tmp_path, monkeypatch):
  path, _, _ = vae_dir
  kwargs = dict(examples_per_shard=50, batch_size=16, log=lambda s: None)
  whole = str(tmp_path / "whole")
  latents.encode_dataset(path, DIGITS, whole, **kwargs)

  out = str(tmp_path / "killed")
  write = latents._write_shard
  written = []

  def dies_in_the_fourth_shard(target, records):
    if len(written) == 3:  # killed while writing: a temporary file with half the bytes is left behind
      with open(os.path.join(out, ".partial.tmp"), "wb") as f:
        f.write(records[0][: len(records[0]) // 2])
      raise KeyboardInterrupt
    written.append(target)
    write(target, records)

  monkeypatch.setattr(latents, "_write_shard", dies_in_the_fourth_shard)
  with pytest.raises(KeyboardInterrupt):
    latents.encode_dataset(path, DIGITS, out, **kwargs)
  assert not os.path.exists(os.path.join(out, "manifest.json"))
  with pytest.raises(DataError, match="manifest"):
    encoded.read_manifest(out)
  assert len([f for f in os.listdir(out) if f.endswith(".array_record")]) == 3
  monkeypatch.setattr(latents, "_write_shard", write)
  latents.encode_dataset(path, DIGITS, out, **kwargs)  # the same command again
  for got, want in zip(_records(out), _records(whole)):
    np.testing.assert_array_equal(got, want)
  assert len(_records(out)[0]) == len(load_digits_split("test")[1])


def test_resuming_with_other_options_is_refused_naming_what_differs(vae_dir, tmp_path):
  path, _, _ = vae_dir
  out = str(tmp_path / "enc")
  latents.encode_dataset(path, DIGITS, out, examples_per_shard=200, log=lambda s: None)
  with pytest.raises(DataError, match="preprocessing"):
    latents.encode_dataset(path, DIGITS, out, examples_per_shard=200, flip=True)
  moved = str(tmp_path / "moved")
  shutil.copytree(path, moved)  # the same autoencoder under another path resumes (nothing to encode)
  written = []
  latents.encode_dataset(moved, DIGITS, out, examples_per_shard=200, log=written.append)
  assert written == []
  with pytest.raises(DataError, match="another vae"):
    latents.encode_dataset(_second_vae(tmp_path), DIGITS, out, examples_per_shard=200)


def test_cli_reports_a_missing_autoencoder_in_one_line(tmp_path, capsys):
  rc = latents.main(
    [
      "jaxdiff.latents",
      "encode",
      f"--vae={tmp_path}/none",
      "--config=configs/digits.py",
      f"--out={tmp_path}/o",
    ]
  )
  assert rc == 2
  err = capsys.readouterr().err.strip()
  assert err.count("\n") == 0 and "neither a diffusers AutoencoderKL folder" in err


def _synthetic_set(out: str, n: int, std: float, flip: bool = False, scaling=(2.0, 0.5)) -> None:
  """A set whose example i has posterior mean i everywhere (its mirror: -i) and std `std`."""
  shape = (2, 2, 3)
  layout = encoded.RecordLayout(shape, "float32", 2 if flip else 1)
  means = lambda i: [np.full(shape, i, np.float32)] + ([np.full(shape, -i, np.float32)] if flip else [])
  records = [layout.pack(i % 3, means(i), [np.full(shape, std, np.float32)] * layout.views) for i in range(n)]
  os.makedirs(out, exist_ok=True)
  latents._write_shard(os.path.join(out, encoded.shard_name(0)), records)
  manifest = {
    "format": encoded.FORMAT,
    "vae": {"scaling": {"scaling_factor": scaling[0], "shift_factor": scaling[1]}},
    "data": {"num_classes": 3},
    "preprocessing": {"flip": flip},
    "latent_shape": list(shape),
    "dtype": "float32",
    "num_examples": n,
    "shards": [{"file": encoded.shard_name(0), "start": 0, "count": n}],
  }
  with open(os.path.join(out, "manifest.json"), "w") as f:
    json.dump(manifest, f)


def _config(out: str, **train):
  return {
    "data": {"name": "latents", "data_dir": out, "image_size": 2, "channels": 3, "num_classes": 3},
    "train": {"batch_size": 10, **train},
    "seed": 7,
  }


def _examples(batch, std=0.01, scaling=(2.0, 0.5)):
  """Which example each row came from (undoing the normalisation), and the row's noise."""
  raw = batch["x"] / scaling[0] + scaling[1]
  ids = np.round(raw.mean(axis=(1, 2, 3))).astype(int)
  return ids, (raw - ids[:, None, None, None]) / std


def test_latent_batches_are_normalised_fresh_draws_covering_each_epoch(tmp_path):
  out = str(tmp_path / "set")
  _synthetic_set(out, 20, std=0.01)
  config = _config(out)
  assert data.dataset_info(config) == data.DatasetInfo("latents", "image", (2, 2, 3), 3, 20)
  stream = data.create_dataset(config, process_index=0, process_count=1)
  batches = [next(stream) for _ in range(4)]
  ids = [_examples(b)[0] for b in batches]
  assert sorted(np.concatenate(ids[:2])) == list(range(20))  # the first epoch: every example once
  assert sorted(np.concatenate(ids[2:])) == list(range(20))
  for b, i in zip(batches, ids):
    np.testing.assert_array_equal(b["label"], i % 3)
  noise = np.concatenate([_examples(b)[1] for b in batches]).ravel()
  assert (
    abs(noise.mean()) < 4 / np.sqrt(noise.size) and abs(noise.std() - 1) < 0.1
  )  # z = mean + std * N(0, 1)
  again = data.create_dataset(config, process_index=0, process_count=1)
  np.testing.assert_array_equal(next(again)["x"], batches[0]["x"])  # same seed, same numbers
  resumed = data.create_dataset(config, process_index=0, process_count=1, start_step=3)
  np.testing.assert_array_equal(next(resumed)["x"], batches[3]["x"])
  # the same example drawn in two epochs gets two different latents
  first = {i: r for i, r in zip(np.concatenate(ids[:2]), np.concatenate([b["x"] for b in batches[:2]]))}
  second = {i: r for i, r in zip(np.concatenate(ids[2:]), np.concatenate([b["x"] for b in batches[2:]]))}
  assert all(not np.array_equal(first[i], second[i]) for i in range(20))


def test_flipped_views_are_drawn_at_random(tmp_path):
  out = str(tmp_path / "set")
  _synthetic_set(out, 20, std=0.01, flip=True)
  stream = data.create_dataset(_config(out), process_index=0, process_count=1)
  raw = np.concatenate([next(stream)["x"] for _ in range(10)]) / 2.0 + 0.5
  signs = np.sign(np.round(raw.mean(axis=(1, 2, 3))))
  signs = signs[signs != 0]
  assert 0.3 < (signs < 0).mean() < 0.7


def test_each_process_reads_its_own_share_of_the_set(tmp_path):
  out = str(tmp_path / "set")
  _synthetic_set(out, 20, std=0.01)
  seen = []
  for p in range(2):
    stream = data.create_dataset(_config(out), process_index=p, process_count=2)
    seen.append(set(np.concatenate([_examples(next(stream))[0] for _ in range(4)])))
  assert seen[0] == set(range(10)) and seen[1] == set(range(10, 20))


def test_latent_config_that_disagrees_with_the_manifest_names_the_field(tmp_path):
  out = str(tmp_path / "set")
  _synthetic_set(out, 4, std=0.01)
  config = _config(out)
  config["data"]["image_size"] = 8
  with pytest.raises(ConfigError, match="config.data.image_size=8"):
    data.dataset_info(config)
  config = _config("")
  with pytest.raises(ConfigError, match="data_dir"):
    data.dataset_info(config)
  with pytest.raises(DataError, match="manifest.json"):
    data.dataset_info(_config(str(tmp_path / "nothing")))


def test_adm_center_crop_resizes_the_short_side_then_crops_the_centre():
  img = np.zeros((40, 100, 3), np.uint8)
  img[:, 40:60] = 255  # a bright band in the middle columns stays in the middle
  out = encoded.adm_center_crop(img, 16)
  assert out.shape == (16, 16, 3)
  assert out[:, 5:11].min() > 200 and out[:, :2].max() < 30 and out[:, -2:].max() < 30
  flat = encoded.adm_center_crop(np.full((300, 200, 1), 77, np.uint8), 32)
  assert flat.shape == (32, 32, 1) and (flat == 77).all()


def test_tfds_images_are_centre_cropped_then_encoded_in_order(vae_dir, tmp_path):
  tfds = pytest.importorskip("tensorflow_datasets")
  rng = np.random.default_rng(0)
  pictures = rng.integers(0, 256, (6, 12, 10, 1), dtype=np.uint8)

  class JaxdiffLatentPatterns(tfds.core.GeneratorBasedBuilder):
    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
      features = {
        "image": tfds.features.Image(shape=(12, 10, 1)),
        "label": tfds.features.ClassLabel(num_classes=3),
      }
      return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict(features))

    def _split_generators(self, dl_manager):
      return {"train": self._generate_examples()}

    def _generate_examples(self):
      for i, img in enumerate(pictures):
        yield i, {"image": img, "label": i % 3}

  root = str(tmp_path / "tfds")
  JaxdiffLatentPatterns(data_dir=root).download_and_prepare()
  path, model, variables = vae_dir
  config = {
    "data": {
      "name": "tfds/jaxdiff_latent_patterns",
      "image_size": 8,
      "channels": 1,
      "num_classes": 3,
      "data_dir": root,
    }
  }
  out = str(tmp_path / "enc")
  manifest = latents.encode_dataset(
    path, config, out, examples_per_shard=4, dtype="float32", log=lambda s: None
  )
  assert manifest["preprocessing"]["crop"] == "adm_center_crop" and manifest["num_examples"] == 6
  labels, means, _ = _records(out)
  # the set's own order (TFDS orders examples by key hash): what tfds reads without shuffling
  read = list(tfds.as_numpy(tfds.builder("jaxdiff_latent_patterns", data_dir=root).as_dataset(split="train")))
  np.testing.assert_array_equal(labels, [ex["label"] for ex in read])
  x = np.stack([encoded.adm_center_crop(ex["image"], 8) for ex in read]).astype(np.float32) / 127.5 - 1.0
  mean, _ = model.apply(variables, x, method=model.encode)
  np.testing.assert_allclose(means[:, 0], mean, atol=1e-5)


# ---------------------------------------------------------------------------------------------
# The workdir's autoencoder record, encoding on the fly, decoded sampling


def _second_vae(tmp_path, seed: int = 1) -> str:
  model = AutoencoderKL(**LAYOUT)
  variables = model.init({"params": jax.random.key(seed)}, np.zeros((1, 8, 8, 1), np.float32))
  path = str(tmp_path / f"vae_{seed}")
  save_diffusers_vae(model, variables, path)
  return path


def test_workdir_records_its_autoencoder_and_refuses_another_naming_both(vae_dir, tmp_path):
  path, model, variables = vae_dir
  other = _second_vae(tmp_path)
  wd = str(tmp_path / "run")
  os.makedirs(wd)
  first = latent_space.LatentSpace(path, model, variables)
  latent_space.check_latent_record(wd, first, write=True)
  record = json.load(open(os.path.join(wd, latent_space.LATENT_RECORD)))
  assert record["source"] == path and record["digest"] == first.digest
  moved = str(tmp_path / "moved")
  shutil.copytree(path, moved)
  latent_space.check_latent_record(wd, latent_space.open_latent_space(_latent_config(moved)), write=True)
  second = latent_space.open_latent_space(_latent_config(other))
  assert second.digest != first.digest
  with pytest.raises(CheckpointError) as err:
    latent_space.check_latent_record(wd, second, write=True)
  for part in (path, first.digest, other, second.digest, "--config.latent.vae", "new --workdir"):
    assert part in str(err.value)
  with pytest.raises(SamplingError, match="config.latent.vae is empty"):
    latent_space.check_latent_record(wd, None, write=False, error=SamplingError)
  assert json.load(open(os.path.join(wd, latent_space.LATENT_RECORD))) == record  # never overwritten


def _latent_config(vae: str, **data):
  c = load_config_file("default")
  c.latent.vae = vae
  c.data.name = "digits"
  c.data.image_size, c.data.channels, c.data.num_classes = 4, 4, 10
  c.train.batch_size = 8
  c.data.update(data)
  return c


def test_image_sets_are_encoded_on_the_fly_as_fresh_posterior_draws(vae_dir):
  path, model, variables = vae_dir
  config = _latent_config(path)
  info = data.dataset_info(config)
  assert info.shape == (4, 4, 4) and info.kind == "image" and info.num_classes == 10
  images = next(iter(data.create_dataset(config)))
  assert images["x"].shape == (8, 8, 8, 1)  # the images, at the autoencoder's size
  space = latent_space.open_latent_space(config)
  stream = latent_space.latent_inputs(data.create_dataset(config), config, space, 0)
  batches = [next(stream) for _ in range(2)]
  first = next(iter(data.create_dataset(config)))
  np.testing.assert_array_equal(batches[0]["label"], first["label"])
  mean, logvar = model.apply(variables, first["x"], method=model.encode)
  z = (np.asarray(mean) - batches[0]["x"] / LAYOUT["scaling_factor"] - LAYOUT["shift_factor"]) / np.exp(
    0.5 * np.asarray(logvar)
  )  # the standard normal draw: z = (mean + std * eps - shift) * scale
  assert abs(z.mean()) < 0.15 and abs(z.std() - 1) < 0.1
  assert not np.allclose(batches[0]["x"], batches[1]["x"])
  resumed = latent_space.latent_inputs(data.create_dataset(config, start_step=1), config, space, 1)
  np.testing.assert_array_equal(next(resumed)["x"], batches[1]["x"])  # a resumed run draws the same
  with pytest.raises(ConfigError, match="config.data.channels=3.*set --config.data.channels=4"):
    data.dataset_info(_latent_config(path, channels=3))


def _tiny_latent_config(vae: str, num_steps: int = 2):
  c = tiny_image_config(num_steps=num_steps)
  c.latent.vae = vae
  c.data.image_size, c.data.channels = 4, 4  # the 4x4x4 latents of the 8x8 digits
  c.model.attention_resolutions = ()
  c.train.checkpoint_every = num_steps
  c.sample.clip_x0 = 0.0
  c.sample.num_steps = 3
  return c


@pytest.mark.slow
def test_latent_model_trains_on_the_fly_resumes_and_samples_decoded_images(vae_dir, tmp_path):
  from jaxdiff.bulk import generate
  from jaxdiff.evaluation import cli as evaluation_cli
  from jaxdiff.shards import read_shard
  from jaxdiff.training import train

  path = str(tmp_path / "vae")
  shutil.copytree(vae_dir[0], path)
  other = _second_vae(tmp_path)
  wd = str(tmp_path / "run")
  train(_tiny_latent_config(path), wd)
  digest = json.load(open(os.path.join(wd, latent_space.LATENT_RECORD)))["digest"]
  with pytest.raises(CheckpointError) as err:  # resuming with another autoencoder
    train(_tiny_latent_config(other, num_steps=4), wd)
  assert digest in str(err.value) and other in str(err.value) and path in str(err.value)

  out = str(tmp_path / "samples")
  generate(wd, out, num_samples=10, shard_size=4, keep_latents=True, labels="balanced", progress=False)
  names = sorted(n for n in os.listdir(out) if n.endswith(".npz"))
  assert names == sorted(n for n in os.listdir(os.path.join(out, "latents")) if n.endswith(".npz"))
  shards = [read_shard(os.path.join(out, n)) for n in names]
  kept = [read_shard(os.path.join(out, "latents", n)) for n in names]
  x = np.concatenate([s["images"] for s in shards])
  z = np.concatenate([s["images"] for s in kept])
  assert (
    x.dtype == np.uint8 and x.shape == (10, 8, 8, 1) and z.dtype == np.float32 and z.shape == (10, 4, 4, 4)
  )
  np.testing.assert_array_equal(np.concatenate([s["labels"] for s in shards]), np.arange(10) % 10)
  model, variables = vae_dir[1], vae_dir[2]
  reference = model.apply(
    variables, z / LAYOUT["scaling_factor"] + LAYOUT["shift_factor"], method=model.decode
  )
  from jaxdiff import images

  assert np.abs(images.to_uint8(np.clip(np.asarray(reference), -1, 1)).astype(int) - x).max() <= 1
  # resuming after a lost latent shard regenerates that shard; a finished run is reused whole
  os.remove(os.path.join(out, "latents", names[1]))
  summary = generate(
    wd, out, num_samples=10, shard_size=4, keep_latents=True, labels="balanced", progress=False
  )
  assert summary["regenerated_shards"] == 1 and summary["reused_samples"] == 6
  np.testing.assert_array_equal(read_shard(os.path.join(out, names[1]))["images"], shards[1]["images"])
  with pytest.raises(SamplingError, match="multiple of the model's 10 classes"):
    generate(wd, str(tmp_path / "odd"), num_samples=12, labels="balanced", progress=False)

  loaded = jaxdiff.load(wd)
  decoded = loaded.sample(jax.random.key(0), 2, np.array([1, 2]))
  lat = loaded.sample(jax.random.key(0), 2, np.array([1, 2]), latents=True)
  assert decoded.shape == (2, 8, 8, 1) and lat.shape == (2, 4, 4, 4)
  np.testing.assert_allclose(decoded, loaded.latent.decode(lat), atol=1e-5)
  assert (
    evaluation_cli.main([f"--samples={out}", "--dataset=digits", "--out=" + str(tmp_path / "r.json")]) == 0
  )
  assert json.load(open(tmp_path / "r.json"))["info"]["num_samples"] == 10

  shutil.rmtree(path)  # the autoencoder at the recorded path is replaced by another one
  shutil.copytree(other, path)
  for call in (
    lambda: generate(wd, str(tmp_path / "new"), num_samples=2, progress=False),
    lambda: jaxdiff.load(wd),
  ):
    with pytest.raises(SamplingError) as err:
      call()
    assert digest in str(err.value) and "not with" in str(err.value)
  assert not os.path.exists(tmp_path / "new")


def _imagenet_metadata(tfds, root: str, n: int) -> None:
  """A data_dir holding only imagenet2012's metadata (a train split of n examples), as a prepared set has."""
  builder = tfds.builder("imagenet2012", data_dir=root)
  template = tfds.core.ShardedFileTemplate(
    data_dir=builder.data_path,
    template="{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}",
    dataset_name="imagenet2012",
    split="train",
    filetype_suffix="tfrecord",
  )
  split = tfds.core.SplitInfo(name="train", shard_lengths=[n], num_bytes=0, filename_template=template)
  builder.info.set_splits(tfds.core.SplitDict([split]))
  builder.data_path.mkdir(parents=True, exist_ok=True)
  builder.info.write_to_directory(builder.data_path)


@pytest.mark.slow
def test_tiny_latent_dit_on_mock_imagenet_encodes_trains_resumes_and_samples_through_the_clis(tmp_path):
  import subprocess
  import sys

  from helpers import ROOT

  from jaxdiff.shards import read_shard

  tfds = pytest.importorskip("tensorflow_datasets")
  layout = {**LAYOUT, "in_channels": 3, "out_channels": 3, "sample_size": 16}
  model = AutoencoderKL(**layout)
  vae = str(tmp_path / "vae")
  save_diffusers_vae(
    model, model.init({"params": jax.random.key(0)}, np.zeros((1, 16, 16, 3), np.float32)), vae
  )
  root, enc, wd, out = (str(tmp_path / n) for n in ("tfds", "encoded", "run", "samples"))
  _imagenet_metadata(tfds, root, 10)
  with tfds.testing.mock_data(policy=tfds.testing.MockPolicy.USE_FILES, data_dir=root, num_examples=10):
    rc = latents.main(
      ["jaxdiff.latents", "encode", f"--vae={vae}", f"--config={ROOT}/configs/imagenet256_dit.py", f"--out={enc}",
       "--config.data.name=tfds/imagenet2012", "--config.data.image_size=16", "--config.data.channels=3",
       f"--config.data.data_dir={root}", "--examples_per_shard=4", "--flip"]
    )  # fmt: skip
  assert rc == 0 and encoded.read_manifest(enc)["latent_shape"] == [8, 8, 4]
  tiny = [
    f"--config.latent.vae={vae}", f"--config.data.data_dir={enc}", "--config.data.image_size=8",
    "--config.model.dit_variant=", "--config.model.hidden_size=32", "--config.model.depth=1",
    "--config.model.num_heads=2", "--config.model.dtype=float32", "--config.train.batch_size=4",
    "--config.train.checkpoint_every=2", "--config.train.sample_every=0", "--config.train.log_every=1",
    "--config.train.compilation_cache_dir=none",
  ]  # fmt: skip
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": ROOT, "JAX_DISABLE_MOST_OPTIMIZATIONS": "1"}

  def run(*argv):
    done = subprocess.run(
      [sys.executable, *argv], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout + done.stderr

  train = ["train.py", f"--config={ROOT}/configs/imagenet256_dit.py", f"--workdir={wd}", *tiny]
  run(*train, "--config.train.num_steps=2")
  assert "resumed at step 2" in run(*train, "--config.train.num_steps=4")
  assert os.path.isdir(os.path.join(wd, "checkpoints", "4"))
  run(
    "sample.py",
    f"--workdir={wd}",
    "--num_samples=4",
    "--num_steps=3",
    "--labels=7,500",
    f"--output={out}",
    "--keep_latents",
  )
  shard = read_shard(os.path.join(out, "samples_0000000_0000004.npz"))
  assert shard["images"].dtype == np.uint8 and shard["images"].shape == (4, 16, 16, 3)
  assert shard["labels"].tolist() == [7, 500, 7, 500]
  assert read_shard(os.path.join(out, "latents", "samples_0000000_0000004.npz"))["images"].shape == (
    4,
    8,
    8,
    4,
  )
