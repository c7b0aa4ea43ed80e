"""The packed checkpoint layout: a train state's small arrays as one vector per dtype.

Orbax spends most of a save's blocking time on per-array bookkeeping, and a UNet's state is
hundreds of small arrays (biases, norms, their Adam moments and EMA: 567 for configs/digits.py).
A single-process save therefore writes every array of at most `PACK_MAX` elements into one vector
per dtype (Orbax item `packed/<dtype>`), the larger ones whole (`arrays/<i>`), and a JSON layout
mapping each parameter path to its place; `unpack` rebuilds the state in a target's structure and
shardings. The layout is worked out once per run (`Packer`).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxdiff.errors import CheckpointError
from jaxdiff.parallel import fetch

__all__ = ["PACK_MAX", "PARTS", "LAYOUT_FORMAT", "Packer", "restore_template", "unpack", "path_name"]

PACK_MAX = 1 << 20  # arrays of at most this many elements go into the per-dtype vectors
PARTS = ("params", "opt_state", "ema_params")  # the state's array trees, in the layout's order
LAYOUT_FORMAT = 1


def key_name(k: Any) -> str:
  """One key of a tree path as text (a dict key, an attribute name or a sequence index)."""
  for attr in ("key", "name", "idx"):
    if hasattr(k, attr):
      return str(getattr(k, attr))
  return str(k)


def path_name(path: tuple) -> str:
  """A leaf's path as 'opt_state/1/0/mu/dense/kernel'-style text, the same for Orbax's metadata
  tree (dicts and lists) and the live tree (named tuples)."""
  return "/".join(key_name(k) for k in path)


def part_leaves(tree: dict) -> list:
  """The leaves of the state's array trees, part after part (the layout's order)."""
  return [leaf for part in PARTS for leaf in jax.tree_util.tree_leaves(tree[part])]


class Packer:
  """How one state structure is packed, worked out once per run: the layout (each part's leaves
  in flattening order, as [path, shape, dtype, "packed", dtype, offset] or [path, shape, dtype,
  "array", key, 0]) and which arrays go into which vector. Each save then copies the arrays to the
  host (all transfers started before any is awaited) and concatenates them, and Orbax handles a
  few arrays whatever the network."""

  def __init__(self, tree: dict):
    self.treedef = jax.tree_util.tree_structure(tree)
    self.signature = [(tuple(x.shape), np.dtype(x.dtype)) for x in part_leaves(tree)]
    groups: dict[str, list[int]] = {}
    self.big: dict[str, int] = {}  # array key -> leaf index
    self.layout: dict[str, Any] = {"format": LAYOUT_FORMAT}
    offsets: dict[str, int] = {}
    index = 0
    for part in PARTS:
      entries = []
      for path, leaf in jax.tree_util.tree_flatten_with_path(tree[part])[0]:
        shape, dtype = self.signature[index]
        head = [path_name(path), list(shape), dtype.name]
        size = int(np.prod(shape, dtype=np.int64))
        if size <= PACK_MAX:
          entries.append(head + ["packed", dtype.name, offsets.get(dtype.name, 0)])
          groups.setdefault(dtype.name, []).append(index)
          offsets[dtype.name] = offsets.get(dtype.name, 0) + size
        else:
          key = str(len(self.big))
          entries.append(head + ["array", key, 0])
          self.big[key] = index
        index += 1
      self.layout[part] = entries
    self.groups = groups

  def fits(self, tree: dict) -> bool:
    return jax.tree_util.tree_structure(tree) == self.treedef and self.signature == [
      (tuple(x.shape), np.dtype(x.dtype)) for x in part_leaves(tree)
    ]

  def item(self, tree: dict) -> dict:
    """The Orbax item of a state: {"step", "packed": {dtype: vector}, "arrays": {key: array}}, on the
    host. New buffers throughout, filled before this returns, so a later step that donates the
    state's device buffers cannot change what is written."""
    leaves = part_leaves(tree)
    for x in leaves:
      if isinstance(x, jax.Array):
        x.copy_to_host_async()  # every transfer started before any is awaited
    host = [np.asarray(x) for x in leaves]
    item = {
      "step": np.array(fetch(tree["step"])),
      "packed": {dt: np.concatenate([host[i].reshape(-1) for i in idx]) for dt, idx in self.groups.items()},
    }
    if self.big:
      item["arrays"] = {key: np.array(host[i]) for key, i in self.big.items()}
    return item


def leaf_dtype(like: Any) -> np.dtype:
  """The dtype of a target leaf: an array, a jax.ShapeDtypeStruct or a Python scalar."""
  return np.dtype(like.dtype) if hasattr(like, "dtype") else np.asarray(like).dtype


def place(value: np.ndarray, like: Any) -> Any:
  """`value` (a host array) as the target leaf `like` holds it: a global array with its sharding
  (each process places the pieces it holds), else a numpy array."""
  sharding = getattr(like, "sharding", None)
  if sharding is None:
    return value
  return jax.make_array_from_callback(value.shape, sharding, lambda index: value[index])


def unpack(layout: dict, item: dict, target: dict, parts: tuple[str, ...]) -> dict:
  """The state tree `Packer.item` wrote, rebuilt in the target's structure and shardings."""
  tree = {"step": place(np.asarray(item["step"], leaf_dtype(target["step"])), target["step"])}
  for part in parts:
    leaves, treedef = jax.tree_util.tree_flatten_with_path(target[part])
    entries = layout[part]
    if len(entries) != len(leaves):
      raise CheckpointError(f"{part}: the checkpoint holds {len(entries)} arrays, the target {len(leaves)}")
    out = []
    for (path, like), (name, shape, dtype, kind, key, offset) in zip(leaves, entries, strict=True):
      if name != path_name(path) or tuple(shape) != tuple(like.shape):
        raise CheckpointError(
          f"{part}: the checkpoint's {name} {tuple(shape)} is not the target's {path_name(path)}"
        )
      if kind == "packed":
        size = int(np.prod(shape, dtype=np.int64))
        value = np.asarray(item["packed"][key][offset : offset + size]).reshape(shape)
      else:
        value = np.asarray(item["arrays"][key])
      out.append(place(value.astype(like.dtype, copy=False), like))
    tree[part] = jax.tree_util.tree_unflatten(treedef, out)
  return tree


def restore_template(layout: dict, target: dict) -> dict:
  """The host arrays Orbax restores a packed step into: the step, each vector at the length the
  layout reads from it, and each array kept whole."""
  dtypes: dict[str, str] = {}  # vector key -> its dtype
  sizes: dict[str, int] = {}  # vector key -> the elements the layout reads from it
  whole: dict[str, np.ndarray] = {}
  for part in PARTS:
    for _name, shape, dtype, kind, key, offset in layout[part]:
      if kind == "packed":
        sizes[key] = max(sizes.get(key, 0), int(offset) + int(np.prod(shape, dtype=np.int64)))
        dtypes[key] = dtype
      else:
        whole[key] = np.zeros(shape, jnp.dtype(dtype))
  item = {
    "step": np.zeros((), leaf_dtype(target["step"])),
    "packed": {key: np.zeros(n, jnp.dtype(dtypes[key])) for key, n in sizes.items()},
  }
  if whole:
    item["arrays"] = whole
  return item
