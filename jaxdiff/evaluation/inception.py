"""Inception-v3 in Flax (NHWC) for FID, matching pytorch-fid's network and preprocessing.

FID is only comparable across papers when the feature network is the TensorFlow 2015
Inception graph (`inception-2015-12-05`) that the original FID code used. pytorch-fid ships
those weights ported to PyTorch (`pt_inception-2015-12-05-6726825d.pth`) together with the
few structural quirks of that graph: average pools that ignore the zero padding
(FIDInceptionA / C / E_1) and a max pool in the last block (FIDInceptionE_2). This module
rebuilds that network in Flax linen with the same layer names, so its state dict maps onto the
Flax variables one to one (conv OIHW -> HWIO, BatchNorm eps 1e-3, no conv biases).

Weights are never downloaded. Get the file from pytorch-fid's GitHub release
    https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth
and either pass the .pth directly (needs torch) or convert it once to a torch-free .npz:
    python -m jaxdiff.evaluation.inception --convert pt_inception-2015-12-05-6726825d.pth inception_fid.npz

Preprocessing (as pytorch-fid): images in [0, 1] are resized to 299 x 299 with bilinear
interpolation (half-pixel centres, no antialiasing: torch's `align_corners=False`), then mapped
to [-1, 1]. Features are the 2048-d global average pool ("pool3").
"""

from __future__ import annotations

import argparse
import functools
import os
from collections.abc import Iterable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxdiff.errors import DataError, MissingDependencyError, run_cli
from jaxdiff.fileio import atomic_write

__all__ = [
  "InceptionV3",
  "FID_WEIGHTS_URL",
  "FID_WEIGHTS_FILE",
  "FEATURE_DIM",
  "InceptionFeatures",
  "convert_pytorch_fid_weights",
  "load_inception_variables",
  "state_dict_to_variables",
  "variables_to_state_dict",
  "random_variables",
  "preprocess",
  "missing_weights_error",
]

FID_WEIGHTS_FILE = "pt_inception-2015-12-05-6726825d.pth"
FID_WEIGHTS_URL = f"https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/{FID_WEIGHTS_FILE}"
FEATURE_DIM = 2048
INPUT_SIZE = 299


def missing_weights_error(path: str | None, flag: str = "--inception_weights") -> FileNotFoundError:
  where = "no file was given" if not path else f"{path} does not exist"
  return FileNotFoundError(
    f"Inception weights for FID are needed, but {where}. jaxdiff never downloads them: fetch "
    f"{FID_WEIGHTS_FILE} (pytorch-fid's port of TensorFlow's 2015 FID Inception) from {FID_WEIGHTS_URL} "
    f"on a machine with internet, then pass it with {flag}=PATH (a .pth needs torch; or convert it "
    f"once with `python -m jaxdiff.evaluation.inception --convert IN.pth OUT.npz` and pass the .npz)."
  )


class BasicConv(nn.Module):
  """Conv (no bias) + BatchNorm(eps=1e-3, running statistics) + ReLU; torch's BasicConv2d."""

  features: int
  kernel: tuple[int, int]
  strides: tuple[int, int] = (1, 1)
  padding: tuple[int, int] = (0, 0)
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    ph, pw = self.padding
    x = nn.Conv(
      self.features,
      self.kernel,
      self.strides,
      padding=((ph, ph), (pw, pw)),
      use_bias=False,
      dtype=self.dtype,
      name="conv",
    )(x)
    x = nn.BatchNorm(use_running_average=True, epsilon=1e-3, dtype=self.dtype, name="bn")(x)
    return nn.relu(x)


def _avg_pool_3x3(x, fid: bool):
  # TF's average pool (FID) divides by the number of real pixels in the window at the border;
  # torchvision's counts the zero padding.
  return nn.avg_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)), count_include_pad=not fid)


class InceptionA(nn.Module):
  pool_features: int
  fid: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    c = functools.partial(BasicConv, dtype=self.dtype)
    b1 = c(64, (1, 1), name="branch1x1")(x)
    b5 = c(48, (1, 1), name="branch5x5_1")(x)
    b5 = c(64, (5, 5), padding=(2, 2), name="branch5x5_2")(b5)
    b3 = c(64, (1, 1), name="branch3x3dbl_1")(x)
    b3 = c(96, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(b3)
    b3 = c(96, (3, 3), padding=(1, 1), name="branch3x3dbl_3")(b3)
    bp = c(self.pool_features, (1, 1), name="branch_pool")(_avg_pool_3x3(x, self.fid))
    return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class InceptionB(nn.Module):
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    c = functools.partial(BasicConv, dtype=self.dtype)
    b3 = c(384, (3, 3), strides=(2, 2), name="branch3x3")(x)
    bd = c(64, (1, 1), name="branch3x3dbl_1")(x)
    bd = c(96, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(bd)
    bd = c(96, (3, 3), strides=(2, 2), name="branch3x3dbl_3")(bd)
    bp = nn.max_pool(x, (3, 3), strides=(2, 2))
    return jnp.concatenate([b3, bd, bp], axis=-1)


class InceptionC(nn.Module):
  channels_7x7: int
  fid: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    c = functools.partial(BasicConv, dtype=self.dtype)
    c7 = self.channels_7x7
    b1 = c(192, (1, 1), name="branch1x1")(x)
    b7 = c(c7, (1, 1), name="branch7x7_1")(x)
    b7 = c(c7, (1, 7), padding=(0, 3), name="branch7x7_2")(b7)
    b7 = c(192, (7, 1), padding=(3, 0), name="branch7x7_3")(b7)
    bd = c(c7, (1, 1), name="branch7x7dbl_1")(x)
    bd = c(c7, (7, 1), padding=(3, 0), name="branch7x7dbl_2")(bd)
    bd = c(c7, (1, 7), padding=(0, 3), name="branch7x7dbl_3")(bd)
    bd = c(c7, (7, 1), padding=(3, 0), name="branch7x7dbl_4")(bd)
    bd = c(192, (1, 7), padding=(0, 3), name="branch7x7dbl_5")(bd)
    bp = c(192, (1, 1), name="branch_pool")(_avg_pool_3x3(x, self.fid))
    return jnp.concatenate([b1, b7, bd, bp], axis=-1)


class InceptionD(nn.Module):
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    c = functools.partial(BasicConv, dtype=self.dtype)
    b3 = c(192, (1, 1), name="branch3x3_1")(x)
    b3 = c(320, (3, 3), strides=(2, 2), name="branch3x3_2")(b3)
    b7 = c(192, (1, 1), name="branch7x7x3_1")(x)
    b7 = c(192, (1, 7), padding=(0, 3), name="branch7x7x3_2")(b7)
    b7 = c(192, (7, 1), padding=(3, 0), name="branch7x7x3_3")(b7)
    b7 = c(192, (3, 3), strides=(2, 2), name="branch7x7x3_4")(b7)
    bp = nn.max_pool(x, (3, 3), strides=(2, 2))
    return jnp.concatenate([b3, b7, bp], axis=-1)


class InceptionE(nn.Module):
  """pool: "avg_exclude_pad" (FID E_1), "max" (FID E_2) or "avg" (torchvision)."""

  pool: str = "avg_exclude_pad"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    c = functools.partial(BasicConv, dtype=self.dtype)
    b1 = c(320, (1, 1), name="branch1x1")(x)
    b3 = c(384, (1, 1), name="branch3x3_1")(x)
    b3 = jnp.concatenate(
      [
        c(384, (1, 3), padding=(0, 1), name="branch3x3_2a")(b3),
        c(384, (3, 1), padding=(1, 0), name="branch3x3_2b")(b3),
      ],
      axis=-1,
    )
    bd = c(448, (1, 1), name="branch3x3dbl_1")(x)
    bd = c(384, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(bd)
    bd = jnp.concatenate(
      [
        c(384, (1, 3), padding=(0, 1), name="branch3x3dbl_3a")(bd),
        c(384, (3, 1), padding=(1, 0), name="branch3x3dbl_3b")(bd),
      ],
      axis=-1,
    )
    if self.pool == "max":
      pooled = nn.max_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)))
    elif self.pool in ("avg_exclude_pad", "avg"):
      pooled = _avg_pool_3x3(x, fid=self.pool == "avg_exclude_pad")
    else:
      raise ValueError(f"unknown InceptionE pool {self.pool!r}")
    bp = c(192, (1, 1), name="branch_pool")(pooled)
    return jnp.concatenate([b1, b3, bd, bp], axis=-1)


class InceptionV3(nn.Module):
  """Inception-v3 up to the 2048-d global average pool, NHWC input in [-1, 1] (any size >= 75).

  fid=True builds pytorch-fid's FID variant (the network of the TF 2015 graph); fid=False the
  torchvision structure. Layer names follow torchvision, so state dicts map one to one.
  """

  fid: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    if x.ndim != 4 or x.shape[-1] != 3:
      raise DataError(f"InceptionV3 expects NHWC RGB images [N, H, W, 3], got shape {x.shape}")
    if min(x.shape[1], x.shape[2]) < 75:
      raise DataError(f"InceptionV3 needs images of at least 75 x 75 pixels, got {x.shape[1:3]}")
    c = functools.partial(BasicConv, dtype=self.dtype)
    x = x.astype(self.dtype)
    x = c(32, (3, 3), strides=(2, 2), name="Conv2d_1a_3x3")(x)
    x = c(32, (3, 3), name="Conv2d_2a_3x3")(x)
    x = c(64, (3, 3), padding=(1, 1), name="Conv2d_2b_3x3")(x)
    x = nn.max_pool(x, (3, 3), strides=(2, 2))
    x = c(80, (1, 1), name="Conv2d_3b_1x1")(x)
    x = c(192, (3, 3), name="Conv2d_4a_3x3")(x)
    x = nn.max_pool(x, (3, 3), strides=(2, 2))
    x = InceptionA(32, self.fid, self.dtype, name="Mixed_5b")(x)
    x = InceptionA(64, self.fid, self.dtype, name="Mixed_5c")(x)
    x = InceptionA(64, self.fid, self.dtype, name="Mixed_5d")(x)
    x = InceptionB(self.dtype, name="Mixed_6a")(x)
    x = InceptionC(128, self.fid, self.dtype, name="Mixed_6b")(x)
    x = InceptionC(160, self.fid, self.dtype, name="Mixed_6c")(x)
    x = InceptionC(160, self.fid, self.dtype, name="Mixed_6d")(x)
    x = InceptionC(192, self.fid, self.dtype, name="Mixed_6e")(x)
    x = InceptionD(self.dtype, name="Mixed_7a")(x)
    x = InceptionE("avg_exclude_pad" if self.fid else "avg", self.dtype, name="Mixed_7b")(x)
    x = InceptionE("max" if self.fid else "avg", self.dtype, name="Mixed_7c")(x)
    return jnp.mean(x.astype(jnp.float32), axis=(1, 2))


# ---- weights --------------------------------------------------------------------------------


@functools.lru_cache(maxsize=2)
def _template(fid: bool = True) -> dict[str, Any]:
  """Shapes of the Flax variables ({"params", "batch_stats"}) without computing anything."""
  shapes = jax.eval_shape(
    InceptionV3(fid=fid).init, jax.random.PRNGKey(0), jnp.zeros((1, 75, 75, 3), jnp.float32)
  )
  return jax.tree_util.tree_map(lambda s: tuple(s.shape), shapes, is_leaf=lambda s: hasattr(s, "shape"))


def _layers(tree: dict[str, Any], prefix: tuple[str, ...] = ()) -> Iterable[tuple[str, ...]]:
  """Paths of the BasicConv modules (the nodes holding a "conv" and a "bn" child)."""
  if "conv" in tree and "bn" in tree:
    yield prefix
    return
  for name in sorted(tree):
    yield from _layers(tree[name], prefix + (name,))


def _get(tree, path):
  for p in path:
    tree = tree[p]
  return tree


def _set(tree, path, value):
  for p in path[:-1]:
    tree = tree.setdefault(p, {})
  tree[path[-1]] = value


def state_dict_to_variables(state_dict: dict[str, Any], fid: bool = True) -> dict[str, Any]:
  """A torch-layout Inception state dict (numpy arrays by torch name) -> Flax {"params", "batch_stats"}.

  Keys it reads per layer L: L.conv.weight (OIHW), L.bn.weight, L.bn.bias, L.bn.running_mean,
  L.bn.running_var. Others (fc.*, num_batches_tracked, AuxLogits.*) are ignored. A missing key
  or a shape mismatch is a ValueError naming it.
  """
  template = _template(fid)
  params: dict[str, Any] = {}
  stats: dict[str, Any] = {}
  missing = []
  for path in _layers(template["params"]):
    name = ".".join(path)
    want_kernel = template["params"]
    for p in path:
      want_kernel = want_kernel[p]
    kernel_shape = want_kernel["conv"]["kernel"]
    entries = {
      "conv.weight": None,
      "bn.weight": None,
      "bn.bias": None,
      "bn.running_mean": None,
      "bn.running_var": None,
    }
    for suffix in entries:
      key = f"{name}.{suffix}"
      if key not in state_dict:
        missing.append(key)
        continue
      entries[suffix] = np.asarray(state_dict[key], dtype=np.float32)
    if any(v is None for v in entries.values()):
      continue
    kernel = np.transpose(entries["conv.weight"], (2, 3, 1, 0))  # OIHW -> HWIO
    if kernel.shape != kernel_shape:
      raise DataError(
        f"{name}.conv.weight has shape {entries['conv.weight'].shape}, expected "
        f"{(kernel_shape[3], kernel_shape[2], kernel_shape[0], kernel_shape[1])} (OIHW): "
        "not the pytorch-fid Inception weights?"
      )
    _set(params, path + ("conv", "kernel"), kernel)
    _set(params, path + ("bn", "scale"), entries["bn.weight"])
    _set(params, path + ("bn", "bias"), entries["bn.bias"])
    _set(stats, path + ("bn", "mean"), entries["bn.running_mean"])
    _set(stats, path + ("bn", "var"), entries["bn.running_var"])
  if missing:
    raise DataError(
      f"the Inception weights lack {len(missing)} entries, e.g. {missing[:3]}: not a "
      f"pytorch-fid {FID_WEIGHTS_FILE} state dict?"
    )
  for kind, tree in (("params", params), ("batch_stats", stats)):
    shapes = jax.tree_util.tree_map(np.shape, tree)
    if shapes != template[kind]:
      raise DataError(f"converted {kind} do not match the network's structure")
  return {"params": params, "batch_stats": stats}


def variables_to_state_dict(variables: dict[str, Any]) -> dict[str, np.ndarray]:
  """The inverse of state_dict_to_variables: torch-named numpy arrays (conv weights OIHW)."""
  out: dict[str, np.ndarray] = {}
  for path in _layers(variables["params"]):
    name = ".".join(path)
    layer = _get(variables["params"], path)
    stats = _get(variables["batch_stats"], path)
    out[f"{name}.conv.weight"] = np.transpose(np.asarray(layer["conv"]["kernel"]), (3, 2, 0, 1))
    out[f"{name}.bn.weight"] = np.asarray(layer["bn"]["scale"])
    out[f"{name}.bn.bias"] = np.asarray(layer["bn"]["bias"])
    out[f"{name}.bn.running_mean"] = np.asarray(stats["bn"]["mean"])
    out[f"{name}.bn.running_var"] = np.asarray(stats["bn"]["var"])
  return out


def _read_pth(pth_path: str) -> dict[str, np.ndarray]:
  try:
    import torch
  except ImportError as e:
    raise MissingDependencyError(
      f"reading {pth_path} needs PyTorch (pip install torch); or convert it to .npz once "
      "on a machine with torch: python -m jaxdiff.evaluation.inception --convert IN.pth OUT.npz"
    ) from e
  state = torch.load(pth_path, map_location="cpu", weights_only=True)
  if hasattr(state, "state_dict"):
    state = state.state_dict()
  return {
    k: v.detach().cpu().numpy()
    for k, v in state.items()
    if hasattr(v, "detach") and not k.endswith("num_batches_tracked")
  }


def convert_pytorch_fid_weights(pth_path: str, out_npz: str) -> str:
  """Converts pytorch-fid's `pt_inception-2015-12-05-6726825d.pth` to a torch-free .npz (torch names).

  Needs torch once; the .npz then loads anywhere. The arrays are checked against the network
  before anything is written. Returns out_npz.
  """
  if not os.path.exists(pth_path):
    raise missing_weights_error(pth_path, flag="the input path")
  state = _read_pth(pth_path)
  variables = state_dict_to_variables(state)  # validates
  sd = variables_to_state_dict(variables)
  return atomic_write(out_npz, lambda f: np.savez(f, **sd))


def load_inception_variables(path: str | None, flag: str = "--inception_weights") -> dict[str, Any]:
  """Flax variables of the FID Inception from a converted .npz or pytorch-fid's .pth (needs torch).

  A missing path raises FileNotFoundError saying where to get the weights (nothing is downloaded).
  """
  if not path or not os.path.exists(path):
    raise missing_weights_error(path, flag)
  if path.endswith(".npz"):
    with np.load(path, allow_pickle=False) as f:
      state = {k: f[k] for k in f.files}
  else:
    state = _read_pth(path)
  return state_dict_to_variables(state)


def random_variables(seed: int = 0, fid: bool = True) -> dict[str, Any]:
  """Random weights with the real network's shapes, for tests and benchmarks only (FID from them is meaningless).

  He-normal conv kernels and BatchNorm statistics near identity keep activations O(1) through
  all 94 layers, so outputs are finite and informative enough to compare implementations.
  """
  template = _template(fid)
  rng = np.random.default_rng(seed)
  params: dict[str, Any] = {}
  stats: dict[str, Any] = {}
  for path in _layers(template["params"]):
    shape = _get(template["params"], path)["conv"]["kernel"]
    fan_in = shape[0] * shape[1] * shape[2]
    cout = shape[3]
    _set(
      params,
      path + ("conv", "kernel"),
      (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32),
    )
    _set(params, path + ("bn", "scale"), rng.uniform(0.5, 1.5, cout).astype(np.float32))
    _set(params, path + ("bn", "bias"), rng.normal(0.0, 0.1, cout).astype(np.float32))
    _set(stats, path + ("bn", "mean"), rng.normal(0.0, 0.1, cout).astype(np.float32))
    _set(stats, path + ("bn", "var"), rng.uniform(0.5, 1.5, cout).astype(np.float32))
  return {"params": params, "batch_stats": stats}


# ---- features -------------------------------------------------------------------------------


def preprocess(images: Any, size: int = INPUT_SIZE) -> jnp.ndarray:
  """NHWC images -> float32 [N, size, size, 3] in [-1, 1], as pytorch-fid feeds its network.

  uint8 images are read as u / 255 in [0, 1]; float images must be in [-1, 1] (jaxdiff's
  convention) and are read as (x + 1) / 2. One channel is repeated to RGB. Bilinear resize with
  half-pixel centres and no antialiasing (torch `F.interpolate(..., align_corners=False)`).
  """
  x = jnp.asarray(images)
  if x.ndim == 3:
    x = x[..., None]
  if x.ndim != 4 or x.shape[-1] not in (1, 3):
    raise DataError(f"images must be NHWC with 1 or 3 channels, got shape {tuple(x.shape)}")
  if x.dtype == jnp.uint8:
    x01 = x.astype(jnp.float32) / 255.0
  elif jnp.issubdtype(x.dtype, jnp.floating):
    x01 = (x.astype(jnp.float32) + 1.0) / 2.0
  else:
    raise DataError(f"images must be uint8 or floats in [-1, 1], got dtype {x.dtype}")
  if x01.shape[-1] == 1:
    x01 = jnp.repeat(x01, 3, axis=-1)
  if x01.shape[1:3] != (size, size):
    x01 = jax.image.resize(x01, (x01.shape[0], size, size, 3), method="linear", antialias=False)
  return 2.0 * x01 - 1.0


@functools.partial(jax.jit, static_argnames=("fid",))
def _features_jit(variables, x, fid: bool = True):
  return InceptionV3(fid=fid).apply(variables, x)


class InceptionFeatures:
  """Batched pool3 features: `InceptionFeatures(variables)(images) -> [N, 2048]` (numpy).

  Images: NHWC uint8, or floats in [-1, 1] (see `preprocess`). Batches are padded to
  `batch_size` and resized before the network, so it compiles once per batch size, whatever
  the images' size or dtype (shared by all instances).
  """

  def __init__(self, variables: dict[str, Any], batch_size: int = 64, fid: bool = True):
    self.variables = jax.tree_util.tree_map(jnp.asarray, variables)
    self.batch_size = int(batch_size)
    self.fid = bool(fid)
    if self.batch_size < 1:
      raise DataError(f"batch_size must be >= 1, got {batch_size}")

  def _run(self, variables, images):
    return _features_jit(variables, preprocess(images), fid=self.fid)

  @classmethod
  def from_file(cls, path: str | None, batch_size: int = 64, flag: str = "--inception_weights"):
    return cls(load_inception_variables(path, flag), batch_size)

  def __call__(self, images: Any) -> np.ndarray:
    images = np.asarray(images)
    if images.ndim == 3:
      images = images[..., None]
    if images.ndim != 4:
      raise DataError(f"images must be NHWC, got shape {images.shape}")
    out = []
    for start in range(0, len(images), self.batch_size):
      chunk = images[start : start + self.batch_size]
      pad = self.batch_size - len(chunk)
      if pad:
        chunk = np.concatenate([chunk, np.repeat(chunk[-1:], pad, axis=0)])
      out.append(np.asarray(self._run(self.variables, chunk))[: self.batch_size - pad])
    if not out:
      return np.zeros((0, FEATURE_DIM), np.float32)
    return np.concatenate(out)


def _main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(
    description="Convert pytorch-fid's Inception weights to a torch-free .npz."
  )
  parser.add_argument(
    "--convert",
    nargs=2,
    metavar=("IN_PTH", "OUT_NPZ"),
    required=True,
    help=f"{FID_WEIGHTS_FILE} (from {FID_WEIGHTS_URL}) and the .npz to write",
  )
  args = parser.parse_args(argv)
  out = convert_pytorch_fid_weights(*args.convert)
  print(f"wrote {out}")
  return 0


if __name__ == "__main__":
  raise SystemExit(run_cli(_main, prog="python -m jaxdiff.evaluation.inception"))
