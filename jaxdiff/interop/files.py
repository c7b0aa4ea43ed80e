"""Reading and writing diffusers model folders: ``config.json`` + ``diffusion_pytorch_model.safetensors``.

Tensors go through the ``safetensors`` package's numpy API (no torch); files through
``jaxdiff.fileio`` (local paths and object stores; a file is written whole or not at all).
"""

from __future__ import annotations

import json
from typing import Any

import jax
import numpy as np
import safetensors.numpy

from jaxdiff import fileio
from jaxdiff.errors import CheckpointError

__all__ = [
  "flatten_params",
  "unflatten_params",
  "CONFIG_NAME",
  "WEIGHTS_NAME",
  "read_model_folder",
  "write_model_folder",
  "read_json",
  "write_json",
  "check_finite",
]

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"
DIFFUSERS_VERSION = "0.30.0"  # written as `_diffusers_version`: the oldest diffusers these folders need


def read_json(path: str) -> dict:
  """A JSON object from `path`; CheckpointError when missing or malformed."""
  if not fileio.exists(path):
    raise CheckpointError(f"{path} not found: not a diffusers folder written by save_pretrained.")
  try:
    value = json.loads(fileio.read_text(path))
  except ValueError as e:
    raise CheckpointError(f"{path} is not valid JSON ({e}).") from None
  if not isinstance(value, dict):
    raise CheckpointError(f"{path} must hold a JSON object, got {type(value).__name__}.")
  return value


def write_json(path: str, value: dict) -> str:
  return fileio.atomic_write_text(path, json.dumps(value, indent=2, sort_keys=True) + "\n")


def read_model_folder(path: str) -> tuple[dict, dict[str, np.ndarray]]:
  """(config, tensors) of a folder written by a diffusers model's ``save_pretrained``."""
  config = read_json(fileio.join(path, CONFIG_NAME))
  weights = fileio.join(path, WEIGHTS_NAME)
  if not fileio.exists(weights):
    raise CheckpointError(
      f"{weights} not found: only safetensors weights are read (re-save the model with "
      "save_pretrained(..., safe_serialization=True), the diffusers default)."
    )
  try:
    tensors = safetensors.numpy.load(fileio.read_bytes(weights))
  except Exception as e:  # truncated or foreign file
    raise CheckpointError(f"{weights} cannot be read as safetensors ({type(e).__name__}: {e}).") from None
  check_finite(tensors, weights)
  return config, tensors


def check_finite(tensors: dict[str, Any], where: str) -> None:
  """CheckpointError naming the first tensor (in key order) of `where` holding NaN or Inf."""
  for key in sorted(tensors):
    value = np.asarray(tensors[key])
    if value.dtype.kind in "fc" or value.dtype.name == "bfloat16":
      bad = ~np.isfinite(value.astype(np.float32) if value.dtype.name == "bfloat16" else value)
      if bad.any():
        raise CheckpointError(
          f"{where}: tensor {key} holds {int(bad.sum())} NaN/Inf value(s) of {value.size}: the weights are "
          "damaged or came from a diverged run; nothing was written."
        )


def write_model_folder(path: str, config: dict[str, Any], tensors: dict[str, np.ndarray]) -> str:
  """Write ``config.json`` and the safetensors weights (float arrays as given, contiguous) into `path`,
  the weights first; CheckpointError before anything is written if a tensor is not finite."""
  check_finite(tensors, path)
  fileio.makedirs(path)
  data = safetensors.numpy.save(
    {k: np.ascontiguousarray(v) for k, v in tensors.items()}, metadata={"format": "pt"}
  )
  fileio.atomic_write_bytes(fileio.join(path, WEIGHTS_NAME), data)
  write_json(fileio.join(path, CONFIG_NAME), config)
  return path


def flatten_params(tree: Any) -> dict[tuple[str, ...], Any]:
  """A nested parameter dict as {path of names: leaf}, for renaming to and from diffusers keys."""
  return {tuple(k.key for k in path): leaf for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def unflatten_params(flat: dict[tuple[str, ...], Any]) -> dict:
  """The inverse of `flatten_params`: {path: leaf} back to a nested dict."""
  tree: dict = {}
  for path, leaf in flat.items():
    node = tree
    for p in path[:-1]:
      node = node.setdefault(p, {})
    node[path[-1]] = leaf
  return tree
