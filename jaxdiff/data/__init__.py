"""Input data for jaxdiff: embedded offline sets (digits, 2-D toys) and the TFDS pipeline.

    info = jaxdiff.data.dataset_info(config)            # validates config.data
    for batch in jaxdiff.data.create_dataset(config, start_step=step):
      batch = jaxdiff.data.to_global(batch, sharding)   # per-process numpy -> global jax.Array

Data sets (config.data.name): "digits" (scikit-learn's 8x8 digits), "toy2d/<s_curve|swiss_roll|
moons|8gaussians|checkerboard>", "tfds/<name>" (prepared TFDS data in config.data.data_dir).
Batches are dicts of numpy arrays: "x" float32 (NHWC images in [-1, 1], or [b, 2] points) and
"label" int32 [b] when config.data.num_classes > 0. TensorFlow is imported only for "tfds/...".
The config may be partial (e.g. {"data": {"name": "digits"}}): each entry point completes it once
(package defaults; a data section without num_classes has no labels).
"""

from jaxdiff.data.base import DatasetInfo, DatasetNotFoundError, to_global
from jaxdiff.data.datasets import create_dataset, dataset_info, load_arrays, preview
from jaxdiff.data.toy2d import TOY2D_NAMES, sample_toy2d

__all__ = [
  "DatasetInfo",
  "DatasetNotFoundError",
  "TOY2D_NAMES",
  "create_dataset",
  "dataset_info",
  "load_arrays",
  "preview",
  "sample_toy2d",
  "to_global",
]
