"""Encoded data sets: every image of a data set encoded once by an autoencoder, read back by training.

    python -m jaxdiff.latents encode --vae=SRC --config=CFG --out=DIR [--split=train] [--flip]
    python -m jaxdiff.latents decode --vae=SRC --samples=DIR --out=DIR   # sample.py --keep_latents' latents -> images

SRC is a diffusers ``AutoencoderKL`` folder (or a pipeline folder with ``vae/``) or a jaxdiff
autoencoder workdir (``config.model.name = "autoencoder_kl"``). DIR receives ArrayRecord shards of
``examples_per_shard`` images each (posterior mean and std of every latent, with its label; the
format is described in ``jaxdiff.data.encoded``) and, once every shard is there, ``manifest.json``
recording the autoencoder's digest and scaling, the data set and the preprocessing. Shard i holds
examples ``[i * S, (i + 1) * S)`` of the data set in its fixed order and is written whole or not
at all, so rerunning the same command after a kill encodes only the missing shards: no example is
duplicated or lost. With several processes, shard i is process ``i % process_count``'s.
Train on the set with ``--config.data.name=latents --config.data.data_dir=DIR``.
"""

from __future__ import annotations

import io
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable

import jax
import ml_collections
import numpy as np
from absl import flags
from jax.experimental import multihost_utils
from ml_collections import config_flags

from jaxdiff import fileio, images
from jaxdiff.data import base, embedded, tfds_pipeline
from jaxdiff.data.encoded import FORMAT, MANIFEST, RecordLayout, _array_record, adm_center_crop, shard_name
from jaxdiff.errors import ConfigError, DataError, run_cli
from jaxdiff.models.autoencoder import AutoencoderKL, encode_images, latent_shape
from jaxdiff.training.autoencoder_step import latent_decoder, load_autoencoder
from jaxdiff.training.latent_space import autoencoder_identity

__all__ = [
  "load_autoencoder",
  "autoencoder_identity",
  "encode_dataset",
  "decode_samples",
  "image_source",
  "PLAN",
]

PLAN = "plan.json"  # what the shards hold; a resumed encode must ask for the same


class ImageSource:
  """A data set in a fixed order, read by ranges: ``read(start, end) -> (images in [-1, 1], int32 labels)``."""

  def __init__(self, n: int, read: Callable[[int, int], tuple[np.ndarray, np.ndarray]], description: dict):
    self.num_examples, self.read, self.description = n, read, description


def _digits_source(config, split: str) -> ImageSource:
  x, y = embedded.load_digits_split(split)
  return ImageSource(len(x), lambda a, b: (x[a:b], y[a:b].astype(np.int32)), {"crop": "none"})


def _tfds_source(config, sub: str, split: str) -> ImageSource:
  src = tfds_pipeline._Source(sub, config.data, split)
  tf = src.tf
  size, channels = src.image_size, src.channels
  if src.num_examples is None:
    raise DataError(f"tfds/{sub} split {split!r} has no example count; prepare the data set first")

  def read(a: int, b: int) -> tuple[np.ndarray, np.ndarray]:
    images, labels = [], []
    for ex in src.read(f"{split}[{a}:{b}]").as_numpy_iterator():
      img = tf.io.decode_image(ex["image"], channels=channels, expand_animations=False).numpy()
      images.append(img if img.shape[:2] == (size, size) else adm_center_crop(img, size))
      labels.append(int(ex["label"]) if "label" in ex else 0)
    return np.stack(images).astype(np.float32) / 127.5 - 1.0, np.asarray(labels, np.int32)

  return ImageSource(src.num_examples, read, {"crop": "adm_center_crop", "data_dir": src.data_dir or ""})


def image_source(config, split: str | None = None) -> ImageSource:
  """The images of config.data (digits or tfds/<name>) in their fixed order, float32 NHWC in [-1, 1]."""
  config = base.complete_config(config)
  split = split or config.data.split
  family, sub = base.parse_name(config.data.name)
  if family == "digits":
    return _digits_source(config, split)
  if family == "tfds":
    return _tfds_source(config, sub, split)
  raise ConfigError(
    f"config.data.name={config.data.name!r}: only image data sets (digits, tfds/<name>) can be encoded"
  )


def _plan(
  config, split, source: ImageSource, identity: dict, shape, dtype: str, flip: bool, per_shard: int
) -> dict:
  return {
    "format": FORMAT,
    "vae": identity,
    "data": {
      "name": config.data.name,
      "split": split,
      "image_size": int(config.data.image_size),
      "channels": int(config.data.channels),
      "num_classes": int(config.data.num_classes),
    },
    "preprocessing": {**source.description, "flip": bool(flip), "range": "[-1, 1]"},
    "latent_shape": list(shape),
    "dtype": dtype,
    "num_examples": source.num_examples,
    "examples_per_shard": per_shard,
  }


def _check_plan(out: str, plan: dict) -> None:
  """Writes out/plan.json, or checks that an earlier (interrupted) encode asked for the same (the same
  autoencoder may sit at another path)."""
  path = fileio.join(out, PLAN)
  if not fileio.exists(path):
    fileio.atomic_write_text(path, json.dumps(plan, indent=2, sort_keys=True) + "\n")
    return
  old = json.loads(fileio.read_text(path))

  def same(key: str) -> bool:  # the autoencoder by what it is (digest, config, scaling), not by its path
    a, b = old.get(key), plan[key]
    if key == "vae" and isinstance(a, dict):
      a, b = {k: v for k, v in a.items() if k != "source"}, {k: v for k, v in b.items() if k != "source"}
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)

  for key in plan:
    if not same(key):
      raise DataError(
        f"{out} holds an encode with another {key} ({old.get(key)!r}, now {plan[key]!r}); resume it with the "
        "same autoencoder, config and options, or encode into a new --out"
      )


def _encoder(model: AutoencoderKL, variables: dict, batch_size: int):
  devices = jax.local_devices()
  mesh = jax.sharding.Mesh(np.asarray(devices), ("data",))
  data = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  params = jax.device_put(variables, replicated)
  step = jax.jit(lambda v, x: encode_images(model, v, x))
  width = -(-batch_size // len(devices)) * len(devices)

  def encode(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(images, np.float32)
    n = len(x)
    x = np.concatenate([x, np.zeros((width - n, *x.shape[1:]), np.float32)]) if n < width else x
    mean, logvar = step(params, jax.device_put(x, data))
    return np.asarray(mean)[:n], np.exp(0.5 * np.asarray(logvar))[:n]

  return encode, width


def _encode_shard(
  encode, width: int, source: ImageSource, layout: RecordLayout, a: int, b: int
) -> list[bytes]:
  records = []
  for start in range(a, b, width):
    images, labels = source.read(start, min(start + width, b))
    views = [encode(images)]
    if layout.views == 2:
      views.append(encode(images[:, :, ::-1]))
    for i, label in enumerate(labels):
      records.append(layout.pack(int(label), [v[0][i] for v in views], [v[1][i] for v in views]))
  return records


def _write_shard(path: str, records: list[bytes]) -> None:
  """The shard at `path`, whole or not at all (written to a local temporary file, then moved)."""
  module, _ = _array_record()
  fd, tmp = tempfile.mkstemp(suffix=".array_record")
  os.close(fd)
  try:
    writer = module.ArrayRecordWriter(tmp, "group_size:1")
    for r in records:
      writer.write(r)
    writer.close()
    with open(tmp, "rb") as f:
      fileio.atomic_write_bytes(path, f.read())
  finally:
    os.remove(tmp)


def encode_dataset(
  vae: str,
  config,
  out: str,
  *,
  split: str | None = None,
  batch_size: int = 64,
  dtype: str = "float16",
  flip: bool = False,
  examples_per_shard: int = 4096,
  process_index: int | None = None,
  process_count: int | None = None,
  log: Callable[[str], None] = print,
) -> dict | None:
  """Encodes config.data (split default config.data.split) with the autoencoder at `vae` into `out`;
  resumes an interrupted encode. Returns the manifest (None on processes other than 0)."""
  if dtype not in ("float16", "float32") or batch_size < 1 or examples_per_shard < 1:
    raise ConfigError(
      f"dtype={dtype!r} must be float16 or float32, batch_size={batch_size} and "
      f"examples_per_shard={examples_per_shard} positive"
    )
  config = base.complete_config(config)
  split = split or config.data.split
  pi, pc = base.resolve_process(process_index, process_count)
  model, variables = load_autoencoder(vae)
  source = image_source(config, split)
  if int(config.data.channels) != model.in_channels:
    raise ConfigError(
      f"config.data.channels={config.data.channels} but the autoencoder takes {model.in_channels} channels"
    )
  shape = latent_shape(model, int(config.data.image_size))
  plan = _plan(
    config, split, source, autoencoder_identity(vae, model, variables), shape, dtype, flip, examples_per_shard
  )
  fileio.makedirs(out)
  _check_plan(out, plan)
  n = source.num_examples
  shards = [
    (i, i * examples_per_shard, min((i + 1) * examples_per_shard, n))
    for i in range(-(-n // examples_per_shard))
  ]
  layout = RecordLayout(shape, dtype, 2 if flip else 1)
  encode, width = _encoder(model, variables, batch_size)
  for i, a, b in shards[pi::pc]:
    path = fileio.join(out, shard_name(i))
    if fileio.exists(path):
      continue
    t0 = time.perf_counter()
    _write_shard(path, _encode_shard(encode, width, source, layout, a, b))
    log(f"{shard_name(i)}: examples {a}..{b - 1} in {time.perf_counter() - t0:.1f}s")
  return _finish(out, plan, shards, pi, pc)


def _finish(out: str, plan: dict, shards: list[tuple[int, int, int]], pi: int, pc: int) -> dict | None:
  if pc > 1:
    multihost_utils.sync_global_devices("jaxdiff.latents.encode")
  if pi != 0:
    return None
  missing = [shard_name(i) for i, _, _ in shards if not fileio.exists(fileio.join(out, shard_name(i)))]
  if missing:
    raise DataError(f"{out}: shards {missing[:3]} are missing after the encode; rerun the same command")
  manifest = {**plan, "shards": [{"file": shard_name(i), "start": a, "count": b - a} for i, a, b in shards]}
  fileio.atomic_write_text(fileio.join(out, MANIFEST), json.dumps(manifest, indent=2, sort_keys=True) + "\n")
  return manifest


def decode_samples(
  vae: str, samples: str, out: str, *, batch_size: int = 64, log: Callable[[str], None] = print
) -> int:
  """Decodes the float latent shards of a sample folder (sample.py on a latent model) into uint8 image
  shards of the same names in `out` (labels and indices kept; existing shards skipped). Returns the count."""
  decode = latent_decoder(
    ml_collections.ConfigDict({"latent": {"vae": vae, "decode_batch_size": batch_size}})
  )
  names = sorted(f for f in fileio.listdir(samples) if f.startswith("samples_") and f.endswith(".npz"))
  if not names:
    raise DataError(f"{samples} holds no samples_*.npz shards to decode")
  fileio.makedirs(out)
  total = 0
  for name in names:
    with fileio.open(fileio.join(samples, name), "rb") as f:
      shard = dict(np.load(f, allow_pickle=False))
    z = shard["images"]
    if z.dtype == np.uint8:
      raise DataError(
        f"{samples}/{name} holds uint8 images, not latents: sample.py writes decoded images; sample with "
        "--keep_latents and decode its latents/ subfolder"
      )
    shard["images"] = images.to_uint8(decode(z))
    total += len(z)
    target = fileio.join(out, name)
    if not fileio.exists(target):
      buf = io.BytesIO()
      np.savez(buf, **shard)
      fileio.atomic_write_bytes(target, buf.getvalue())
      log(f"{name}: {len(z)} latents decoded")
  return total


def _flags(argv: list[str]) -> flags.FlagValues:
  fv = flags.FlagValues()  # private: importing jaxdiff.latents defines no global flags
  config_flags.DEFINE_config_file(
    "config", None, "config file of the data set (configs/<name>.py)", flag_values=fv, sys_argv=argv
  )
  flags.DEFINE_string(
    "vae", None, "diffusers AutoencoderKL folder or jaxdiff autoencoder workdir", flag_values=fv
  )
  flags.DEFINE_string(
    "out", None, "folder of the encoded set (resumed when it holds a partial one)", flag_values=fv
  )
  flags.DEFINE_string("split", None, "split to encode (default config.data.split)", flag_values=fv)
  flags.DEFINE_integer("batch_size", 64, "images per encoder call (over all local devices)", flag_values=fv)
  flags.DEFINE_enum("dtype", "float16", ["float16", "float32"], "stored mean / std precision", flag_values=fv)
  flags.DEFINE_boolean(
    "flip", False, "also store each image's mirror (training picks one at random)", flag_values=fv
  )
  flags.DEFINE_integer("examples_per_shard", 4096, "images per ArrayRecord shard", flag_values=fv)
  flags.DEFINE_string("samples", None, "decode: the sample folder of float latent shards", flag_values=fv)
  return fv


_USAGE = (
  "usage: python -m jaxdiff.latents encode --vae=SRC --config=CFG --out=DIR [--split=...] [--flip] | "
  "decode --vae=SRC --samples=DIR --out=DIR"
)
_REQUIRED = {"encode": ("config", "vae", "out"), "decode": ("vae", "samples", "out")}


def _main(argv) -> int:
  argv = list(argv)
  if len(argv) > 1 and argv[1] in ("-h", "--help"):
    print(f"{_USAGE}\n\nflags:\n{_flags([argv[0]]).get_help()}")
    return 0
  if len(argv) < 2 or argv[1] not in _REQUIRED:
    raise ConfigError(_USAGE)
  command = argv[1]
  fv = _flags([argv[0], *argv[2:]])
  try:
    fv([argv[0], *argv[2:]])
  except flags.Error as e:
    raise ConfigError(str(e)) from None
  for name in _REQUIRED[command]:
    if fv[name].value is None:
      raise ConfigError(f"--{name} is required ({_USAGE})")
  if command == "decode":
    n = decode_samples(fv.vae, fv.samples, fv.out, batch_size=fv.batch_size)
    print(f"decoded {n} latents of {fv.samples} into {fv.out}")
    return 0
  manifest = encode_dataset(
    fv.vae, fv.config, fv.out, split=fv.split, batch_size=fv.batch_size, dtype=fv.dtype, flip=fv.flip,
    examples_per_shard=fv.examples_per_shard,
  )  # fmt: skip
  if manifest is not None:
    print(
      f"wrote {fileio.join(fv.out, MANIFEST)}: {manifest['num_examples']} examples, latents {manifest['latent_shape']}"
    )
  return 0


def main(argv=None) -> int:
  """The command line (see the module docstring); user errors print one line and exit 2."""
  return run_cli(_main, sys.argv if argv is None else argv, prog="jaxdiff.latents")


if __name__ == "__main__":
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  raise SystemExit(main())
