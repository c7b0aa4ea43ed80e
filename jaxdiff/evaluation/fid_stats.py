"""`python -m jaxdiff.evaluation.fid_stats`: FID reference statistics of a data set, saved as `.npz`.

    # the data set of a training config (its "train" split), with the "test" split as baseline
    python -m jaxdiff.evaluation.fid_stats --config=configs/cifar10.py \\
        --inception_weights=inception_fid.npz --out=stats/cifar10_train.npz
    # any images stored as sample shards (.npz with "images", uint8 NHWC)
    python -m jaxdiff.evaluation.fid_stats --images=DIR_OR_NPZ --inception_weights=... --out=stats.npz

Data come through jaxdiff.data exactly as training sees them (same resizing and cropping, at
config.data.image_size, no random flips), one full pass over the split, quantised to uint8 as
sample files are, so reference and samples take the same path into the network. The file has
pytorch-fid's keys `mu` / `sigma`, and `mu_heldout` / `sigma_heldout` for --heldout_split.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import importlib.util
import math
import os
import sys
from collections.abc import Iterator, Sequence

import numpy as np

from jaxdiff import images as image_utils
from jaxdiff.data import create_dataset, dataset_info
from jaxdiff.errors import DataError, run_cli
from jaxdiff.evaluation.fid import save_statistics, statistics_from_batches
from jaxdiff.evaluation.inception import InceptionFeatures, load_inception_variables
from jaxdiff.shards import read_samples

__all__ = ["load_config_file", "dataset_batches", "compute_dataset_statistics", "main"]


def load_config_file(path: str):
  """get_config() of a config .py file (as train.py's --config takes)."""
  if not os.path.exists(path):
    raise FileNotFoundError(f"--config={path} does not exist")
  spec = importlib.util.spec_from_file_location("_jaxdiff_fid_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  if not hasattr(module, "get_config"):
    raise DataError(f"{path} has no get_config() function")
  return module.get_config()


def _unlocked(config):
  return config.unlocked() if hasattr(config, "unlocked") else contextlib.nullcontext()


def dataset_batches(config, split: str, batch_size: int, limit: int | None = None) -> Iterator[np.ndarray]:
  """uint8 image batches covering one pass over `split` of config.data (at most `limit` images)."""
  config = copy.deepcopy(config)
  with _unlocked(config):
    config.data.random_flip = False
  info = dataset_info(config, split=split)
  if info.kind != "image":
    raise DataError(f"{config.data.name} is not an image data set: FID statistics need images")
  total = info.num_examples if limit is None else min(info.num_examples, int(limit))
  stream = create_dataset(config, batch_size=batch_size, process_index=0, process_count=1, split=split)
  done = 0
  for _ in range(math.ceil(total / batch_size)):
    x = next(stream)["x"][: total - done]
    done += len(x)
    yield image_utils.to_uint8(x)


def _shard_batches(path: str, batch_size: int) -> Iterator[np.ndarray]:
  samples = read_samples(path)
  if "images" not in samples:
    raise DataError(f"{path} holds no 'images'")
  images = samples["images"]
  for i in range(0, len(images), batch_size):
    yield images[i : i + batch_size]


def compute_dataset_statistics(
  config,
  features_fn,
  *,
  split: str = "train",
  heldout_split: str | None = "test",
  batch_size: int = 64,
  limit: int | None = None,
):
  """{"mu", "sigma", "num"[, "mu_heldout", "sigma_heldout", "num_heldout"]} of a configured data set."""
  mu, sigma, n = statistics_from_batches(features_fn, dataset_batches(config, split, batch_size, limit))
  out = {"mu": mu, "sigma": sigma, "num": n}
  if heldout_split:
    mu_h, sigma_h, n_h = statistics_from_batches(
      features_fn, dataset_batches(config, heldout_split, batch_size, limit)
    )
    out.update(mu_heldout=mu_h, sigma_heldout=sigma_h, num_heldout=n_h)
  return out


def main(argv: Sequence[str] | None = None) -> int:
  p = argparse.ArgumentParser(
    prog="python -m jaxdiff.evaluation.fid_stats",
    description=__doc__,
    formatter_class=argparse.RawDescriptionHelpFormatter,
  )
  src = p.add_mutually_exclusive_group(required=True)
  src.add_argument("--config", help="training config file: statistics of its data set")
  src.add_argument("--images", help="a .npz shard with 'images' (uint8 NHWC) or a directory of them")
  p.add_argument(
    "--inception_weights",
    default=None,
    help="pytorch-fid's pt_inception-2015-12-05-6726825d.pth (needs torch) or its converted .npz",
  )
  p.add_argument("--out", required=True, help="statistics .npz to write")
  p.add_argument("--dataset", default=None, help="override config.data.name (e.g. tfds/cifar10)")
  p.add_argument("--data_dir", default=None, help="override config.data.data_dir")
  p.add_argument("--split", default="train", help="reference split (default train)")
  p.add_argument(
    "--heldout_split", default="test", help="held-out split for the baseline row; 'none' to skip"
  )
  p.add_argument("--limit", type=int, default=None, help="use at most this many images per split")
  p.add_argument("--batch_size", type=int, default=64)
  args = p.parse_args(argv)

  variables = load_inception_variables(args.inception_weights)  # clear error before any data work
  features = InceptionFeatures(variables, batch_size=args.batch_size)
  if args.images:
    mu, sigma, n = statistics_from_batches(features, _shard_batches(args.images, args.batch_size), args.limit)
    save_statistics(args.out, mu, sigma, num=n, source=os.path.abspath(args.images))
    print(f"wrote {args.out}: {n} images")
    return 0
  config = load_config_file(args.config)
  if args.dataset or args.data_dir is not None:
    with _unlocked(config):
      if args.dataset:
        config.data.name = args.dataset
      if args.data_dir is not None:
        config.data.data_dir = args.data_dir
  heldout = None if args.heldout_split.lower() == "none" else args.heldout_split
  stats = compute_dataset_statistics(
    config, features, split=args.split, heldout_split=heldout, batch_size=args.batch_size, limit=args.limit
  )
  save_statistics(
    args.out,
    stats["mu"],
    stats["sigma"],
    num=stats["num"],
    mu_heldout=stats.get("mu_heldout"),
    sigma_heldout=stats.get("sigma_heldout"),
    num_heldout=stats.get("num_heldout"),
    dataset=str(config.data.name),
    split=args.split,
    heldout_split=str(heldout),
    image_size=int(config.data.image_size),
  )
  msg = f"wrote {args.out}: {stats['num']} {args.split} images"
  if heldout:
    msg += f", {stats['num_heldout']} {heldout} images (held-out baseline)"
  print(msg)
  return 0


if __name__ == "__main__":
  sys.exit(run_cli(main, prog="python -m jaxdiff.evaluation.fid_stats"))
