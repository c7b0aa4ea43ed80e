"""Sample shards on disk: names, layout, atomic writes and the checks that decide "complete".

Shard j of a run with shard size S holds samples [j S, min((j + 1) S, N)) in one uncompressed
`.npz` named `samples_{start:07d}_{end:07d}.npz` with three arrays:

  "images" uint8 [n, H, W, C] (or "points" float32 [n, D] for 2-D data)
  "labels" int32 [n]   the requested class of each sample, -1 for none
  "index"  int64 [n]   the global sample numbers start .. end - 1

A shard is written to a hidden temporary file in the same folder (`.samples_....npz.p<k>.tmp`,
which never matches `*.npz`, so readers globbing for shards cannot see it), flushed, fsynced and
renamed into place: a crash leaves either the old state or the complete shard. On resume every
existing shard is opened and checked (`check_shard`): keys, dtypes, shapes, index range, labels
and the zip CRC-32 of every array (read in full), so a truncated or damaged file is regenerated
instead of trusted.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence

import numpy as np

from jaxdiff.fileio import atomic_write

__all__ = [
  "SHARD_PATTERN",
  "shard_name",
  "parse_shard_name",
  "layout",
  "write_shard",
  "check_shard",
  "read_shard",
  "temp_name",
]

SHARD_PATTERN = re.compile(r"^samples_(\d{7,})_(\d{7,})\.npz$")


def shard_name(start: int, end: int) -> str:
  return f"samples_{int(start):07d}_{int(end):07d}.npz"


def parse_shard_name(name: str) -> tuple[int, int] | None:
  m = SHARD_PATTERN.match(name)
  return (int(m.group(1)), int(m.group(2))) if m else None


def layout(num_samples: int, shard_size: int) -> list[tuple[int, int]]:
  """[(start, end)] of every shard: fixed by num_samples and shard_size alone (not by devices)."""
  return [(s, min(s + shard_size, num_samples)) for s in range(0, num_samples, shard_size)]


def temp_name(name: str, tag: str) -> str:
  return f".{name}.{tag}.tmp"


def write_shard(
  directory: str, start: int, end: int, kind: str, data: np.ndarray, labels: np.ndarray, tag: str = "p0"
) -> str:
  """Atomically write shard [start, end) (`kind` is "images" or "points"); returns its path."""
  n = end - start
  if len(data) != n or len(labels) != n:
    raise ValueError(f"shard [{start}, {end}) needs {n} samples, got {len(data)} and {len(labels)} labels")
  data = np.ascontiguousarray(data, np.uint8 if kind == "images" else np.float32)
  index = np.arange(start, end, dtype=np.int64)
  name = shard_name(start, end)
  return atomic_write(
    os.path.join(directory, name),
    lambda f: np.savez(f, **{kind: data, "labels": np.asarray(labels, np.int32), "index": index}),
    tmp_name=temp_name(name, tag),
  )


def read_shard(path: str) -> dict[str, np.ndarray]:
  """All arrays of a shard, read in full (so the zip CRC-32 of each is verified)."""
  with np.load(path, allow_pickle=False) as f:
    return {k: np.asarray(f[k]) for k in f.files}


def check_shard(
  path: str, start: int, end: int, kind: str, data_shape: Sequence[int], expected_labels: np.ndarray
) -> str | None:
  """None if `path` is a complete, correct shard [start, end); else what is wrong with it."""
  try:
    arrays = read_shard(path)
  except FileNotFoundError:
    return "missing"
  except Exception as e:  # truncated zip, bad CRC, bad header, not a zip at all
    return f"unreadable ({type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''})"
  want = {kind, "labels", "index"}
  if set(arrays) != want:
    return f"keys {sorted(arrays)} instead of {sorted(want)}"
  n = end - start
  data, labels, index = arrays[kind], arrays["labels"], arrays["index"]
  dtype = np.uint8 if kind == "images" else np.float32
  if data.dtype != dtype or data.shape != (n,) + tuple(data_shape):
    return f"{kind} {data.dtype}{list(data.shape)} instead of {np.dtype(dtype)}{[n] + list(data_shape)}"
  if index.dtype != np.int64 or not np.array_equal(index, np.arange(start, end)):
    return f"index is not {start}..{end - 1}"
  if labels.dtype != np.int32 or not np.array_equal(labels, expected_labels):
    return "labels differ from the run's labels"
  return None
