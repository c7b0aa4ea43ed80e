"""The sample shard format, in one place: names, layout, atomic writes, the checks that decide
"complete", and the reader of a folder of shards. `jaxdiff.bulk` writes shards, `jaxdiff.evaluation`
reads them; neither knows the format beyond this module.

Shard j of a run with shard size S holds samples [j S, min((j + 1) S, N)) in one uncompressed
`.npz` named `samples_{start:07d}_{end:07d}.npz` with three arrays:

  "images" uint8 [n, H, W, C] (or float32, the model's values, for --output_format=float; "points"
           float32 [n, D] for 2-D data)
  "labels" int32 [n]   the requested class of each sample, -1 for none
  "index"  int64 [n]   the global sample numbers start .. end - 1
  "run"    str (0-d)   JSON of the run the samples belong to: what decides sample i (seed, sampler
                       settings, labels, conditioning, checkpoint step, parameter digest). Shards
                       written by older jaxdiff lack it; readers that do not check it ignore it.

A shard is written to a hidden temporary file in the same folder (`.samples_....npz.p<k>.tmp`,
which never matches `*.npz`, so readers globbing for shards cannot see it), flushed, fsynced and
renamed into place: a crash leaves either the old state or the complete shard. On resume every
existing shard is opened and checked (`check_shard`): keys, dtypes, shapes, index range, labels
and the zip CRC-32 of every array (read in full), so a truncated or damaged file is regenerated
instead of trusted; a shard of another run (copied in, or left by a run with other settings) is
told apart by its "run" record. Shards are read with `allow_pickle=False`, and a file that is not
a zip archive is reported as "not an .npz sample shard" before numpy gets to guess at it.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from jaxdiff import fileio
from jaxdiff.errors import DataError
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
  "sample_dtype",
  "KINDS",
  "shard_paths",
  "read_samples",
  "run_of",
  "run_differences",
]

KINDS = ("images", "points")  # the sample array of a shard: uint8 NHWC images or float32 points

SHARD_PATTERN = re.compile(r"^samples_(\d{7,})_(\d{7,})\.npz$")


def shard_name(start: int, end: int) -> str:
  return f"samples_{int(start):07d}_{int(end):07d}.npz"


def parse_shard_name(name: str) -> tuple[int, int] | None:
  m = SHARD_PATTERN.match(name)
  return (int(m.group(1)), int(m.group(2))) if m else None


def layout(num_samples: int, shard_size: int) -> list[tuple[int, int]]:
  """[(start, end)] of every shard: fixed by num_samples and shard_size alone (not by devices)."""
  return [(s, min(s + shard_size, num_samples)) for s in range(0, num_samples, shard_size)]


def sample_dtype(kind: str) -> np.dtype:
  """The default dtype of a shard's sample array: uint8 images, float32 points."""
  return np.dtype(np.uint8 if kind == "images" else np.float32)


def temp_name(name: str, tag: str) -> str:
  return f".{name}.{tag}.tmp"


def write_shard(
  directory: str,
  start: int,
  end: int,
  kind: str,
  data: np.ndarray,
  labels: np.ndarray,
  tag: str = "p0",
  run: Mapping[str, Any] | None = None,
  dtype: Any = None,
) -> str:
  """Atomically write shard [start, end) (`kind` is "images" or "points"); returns its path. `run`:
  the identity of the run the samples belong to, stored as the "run" array (JSON). `dtype`: of the
  sample array (default `sample_dtype(kind)`; float32 stores images as the model's values)."""
  n = end - start
  if len(data) != n or len(labels) != n:
    raise DataError(f"shard [{start}, {end}) needs {n} samples, got {len(data)} and {len(labels)} labels")
  data = np.ascontiguousarray(data, sample_dtype(kind) if dtype is None else dtype)
  index = np.arange(start, end, dtype=np.int64)
  arrays = {kind: data, "labels": np.asarray(labels, np.int32), "index": index}
  if run is not None:
    arrays["run"] = np.array(json.dumps(dict(run), sort_keys=True))  # a 0-d unicode array: no pickle
  name = shard_name(start, end)
  return atomic_write(
    os.path.join(directory, name), lambda f: np.savez(f, **arrays), tmp_name=temp_name(name, tag)
  )


_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # a zip's first entry, or an empty zip


def read_shard(path: str) -> dict[str, np.ndarray]:
  """All arrays of a shard, read in full (so the zip CRC-32 of each is verified). DataError for a
  file that is not an .npz archive (numpy would otherwise suggest unpickling it)."""
  with fileio.open(path, "rb") as f:
    head = f.read(4)
  if head not in _ZIP_MAGIC:
    raise DataError(
      f"{path} is not an .npz sample shard (not a zip archive); give the .npz files sample.py writes "
      "or a folder of them."
    )
  with np.load(fileio.readable(path), allow_pickle=False) as f:
    return {k: np.asarray(f[k]) for k in f.files}


def run_of(arrays: Mapping[str, np.ndarray]) -> dict[str, Any] | None:
  """The run record of a shard's arrays (`read_shard`), None if it has none (older shards)."""
  if "run" not in arrays:
    return None
  try:
    run = json.loads(str(arrays["run"][()]))
  except (ValueError, TypeError, IndexError):
    return {"run": "unreadable"}
  return run if isinstance(run, dict) else {"run": "unreadable"}


def _show(v: Any) -> str:
  return json.dumps(v, sort_keys=True) if isinstance(v, (dict, list)) else repr(v)


def run_differences(shard: Mapping[str, Any], run: Mapping[str, Any]) -> list[str]:
  """'seed 1 (shard) vs 0 (this run)' for every field where two run records differ."""
  return [
    f"{k} {_show(shard.get(k))} (shard) vs {_show(run.get(k))} (this run)"
    for k in sorted(set(shard) | set(run))
    if shard.get(k) != run.get(k)
  ]


def check_shard(
  path: str,
  start: int,
  end: int,
  kind: str,
  data_shape: Sequence[int],
  expected_labels: np.ndarray,
  run: Mapping[str, Any] | None = None,
  dtype: Any = None,
) -> str | None:
  """None if `path` is a complete, correct shard [start, end); else what is wrong with it. With
  `run` (the identity `write_shard` stored), a shard of another run, or one without a record, is
  not complete either. `dtype`: the sample array's (default `sample_dtype(kind)`)."""
  try:
    arrays = read_shard(path)
  except FileNotFoundError:
    return "missing"
  except Exception as e:  # truncated zip, bad CRC, bad header, not a zip at all
    return f"unreadable ({type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''})"
  want = {kind, "labels", "index"}
  if set(arrays) - {"run"} != want:
    return f"keys {sorted(arrays)} instead of {sorted(want)}"
  n = end - start
  data, labels, index = arrays[kind], arrays["labels"], arrays["index"]
  dtype = sample_dtype(kind) if dtype is None else np.dtype(dtype)
  if data.dtype != dtype or data.shape != (n,) + tuple(data_shape):
    return f"{kind} {data.dtype}{list(data.shape)} instead of {np.dtype(dtype)}{[n] + list(data_shape)}"
  if index.dtype != np.int64 or not np.array_equal(index, np.arange(start, end)):
    return f"index is not {start}..{end - 1}"
  if labels.dtype != np.int32 or not np.array_equal(labels, expected_labels):
    return "labels differ from the run's labels"
  if run is not None:
    recorded = run_of(arrays)
    if recorded is None:
      return "it records no run (written by an older jaxdiff), so it cannot be shown to belong to this one"
    diffs = run_differences(recorded, run)
    if diffs:
      return "it belongs to another run: " + "; ".join(diffs)
  return None


def shard_paths(path: str) -> list[str]:
  """A shard file, or every `*.npz` in a folder (sorted); FileNotFoundError saying what to give."""
  if fileio.isdir(path):
    paths = fileio.glob(path, "*.npz")
    if not paths:
      raise FileNotFoundError(f"no .npz sample shards in {path}")
    return paths
  if not fileio.exists(path):
    raise FileNotFoundError(f"--samples={path} does not exist (give a .npz file or a directory of them)")
  return [path]


def read_samples(path: str) -> dict[str, Any]:
  """Every sample in a shard file or a folder of shards, in order of their index.

  Returns {"images" | "points": array, "labels": int32 [N] or None, "index": int64 [N] or None,
  "duplicates": how many repeated indices (a resumed run) were dropped}. Shards written elsewhere
  may lack "labels" and "index" (then all of them must); a shard with neither sample array, mixed
  kinds or mismatched lengths is a DataError.
  """
  parts: dict[str, list] = {}
  kind = None
  first_run: tuple[str, dict] | None = None
  paths = shard_paths(path)
  for p in paths:
    arrays = read_shard(p)
    here = next((k for k in KINDS if k in arrays), None)
    if here is None:
      raise DataError(f"{p} has neither 'images' nor 'points' (keys: {sorted(arrays)})")
    if kind is not None and here != kind:
      raise DataError(f"{p} holds '{here}' but earlier shards hold '{kind}'")
    kind = here
    run = run_of(arrays)
    if run is not None:
      if first_run is None:
        first_run = (p, run)
      elif run != first_run[1]:
        diffs = "; ".join(run_differences(run, first_run[1])).replace("(this run)", f"({first_run[0]})")
        raise DataError(
          f"{p} belongs to another sampling run than {first_run[0]} ({diffs}); evaluate one run's "
          "shards at a time."
        )
    n = len(arrays[kind])
    parts.setdefault(kind, []).append(arrays[kind])
    for key in ("labels", "index"):
      if key in arrays:
        arr = arrays[key].reshape(-1)
        if len(arr) != n:
          raise DataError(f"{p}: '{key}' has {len(arr)} entries for {n} samples")
        parts.setdefault(key, []).append(arr)
  for key in ("labels", "index"):
    if key in parts and len(parts[key]) != len(paths):
      raise DataError(
        f"'{key}' is in {len(parts[key])} of the {len(paths)} shards in {path}; all shards or none must have it"
      )
  data = np.concatenate(parts[kind])
  labels = np.concatenate(parts["labels"]).astype(np.int32) if "labels" in parts else None
  index = np.concatenate(parts["index"]).astype(np.int64) if "index" in parts else None
  duplicates = 0
  if index is not None:
    order = np.argsort(index, kind="stable")
    _, first = np.unique(index[order], return_index=True)
    keep = order[first]
    duplicates = len(index) - len(keep)
    data, index = data[keep], index[keep]
    labels = labels[keep] if labels is not None else None
  return {kind: data, "labels": labels, "index": index, "duplicates": duplicates}
