"""Checksums of checkpoint steps: `<step>/jaxdiff_checksums.json` (the manifest).

The manifest holds the size and SHA-256 of every file of a step, written once Orbax has completed
the step, and the records of what the step means: the optimizer fields its optimizer state was built
from and the set-up fields (process, prediction, noise levels, model, data shape) of its network.
A step is checked against it before it is restored: a missing, truncated or changed file is damage.
"""

from __future__ import annotations

import hashlib
import json
import os

from jaxdiff import fileio
from jaxdiff.errors import CheckpointError
from jaxdiff.fileio import atomic_write_text

__all__ = ["MANIFEST_NAME", "file_digests", "write_manifest", "read_manifest", "verify_step"]

MANIFEST_NAME = "jaxdiff_checksums.json"  # in each step folder: {relative path: [size, sha256]}


def _sha256(path: str) -> str:
  h = hashlib.sha256()
  with fileio.open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 22), b""):
      h.update(block)
  return h.hexdigest()


def file_digests(folder: str) -> dict[str, list]:
  """{relative path: [size, sha256 hex]} of every file under `folder` but the manifest."""
  out = {}
  for root, _, files in fileio.walk(folder):
    for name in sorted(files):
      rel = os.path.relpath(os.path.join(root, name), folder)
      if rel == MANIFEST_NAME or (name.startswith(".") and name.endswith(".tmp")):
        continue
      path = os.path.join(root, name)
      out[rel.replace(os.sep, "/")] = [fileio.getsize(path), _sha256(path)]
  return out


def write_manifest(folder: str, step: int, records: dict | None = None) -> str:
  """Write `folder`'s manifest: the digests of its files, plus `records` ({"optimizer": ...,
  "setup": ...}). OSError when it cannot be written."""
  manifest = {"step": step, "algorithm": "sha256", "files": file_digests(folder), **(records or {})}
  return atomic_write_text(
    os.path.join(folder, MANIFEST_NAME), json.dumps(manifest, indent=1, sort_keys=True)
  )


def read_manifest(folder: str) -> dict | None:
  """A step folder's manifest, or None when it has none or it is unreadable."""
  try:
    with fileio.open(os.path.join(folder, MANIFEST_NAME)) as f:
      data = json.load(f)
  except (OSError, ValueError):
    return None
  return data if isinstance(data, dict) else None


def verify_step(folder: str, step: int) -> bool:
  """Check a step's files against its manifest: CheckpointError naming the first file that is
  missing or differs; False when the step has no manifest (written before manifests existed, or
  killed between completing the step and writing it), True when every file matches."""
  path = os.path.join(folder, MANIFEST_NAME)
  if not fileio.exists(path):
    return False
  try:
    with fileio.open(path) as f:
      files = json.load(f)["files"]
    items = sorted(files.items())
  except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
    raise CheckpointError(f"step {step}: its checksum file {MANIFEST_NAME} is unreadable ({e})") from None
  for rel, (size, digest) in items:
    p = os.path.join(folder, rel)
    if not fileio.isfile(p):
      raise CheckpointError(f"step {step}: {rel} is missing")
    if fileio.getsize(p) != size:
      raise CheckpointError(
        f"step {step}: {rel} has {fileio.getsize(p)} bytes, {size} when saved (truncated?)"
      )
    if _sha256(p) != digest:
      raise CheckpointError(f"step {step}: content checksum mismatch in {rel} (bit rot or a bad copy)")
  return True
