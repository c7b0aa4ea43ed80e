"""Atomic file writes: every file jaxdiff writes (shards, PNGs, JSON, npz, weights) goes through
`atomic_write`, so a reader or a crash never sees a half-written file."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from typing import BinaryIO

__all__ = ["atomic_write", "atomic_write_bytes", "atomic_write_text"]


def _fsync_dir(directory: str) -> None:
  try:
    fd = os.open(directory, os.O_RDONLY)
  except OSError:
    return
  try:
    os.fsync(fd)
  except OSError:  # some file systems do not support fsync on directories
    pass
  finally:
    os.close(fd)


def atomic_write(path: str, write: Callable[[BinaryIO], object], tmp_name: str | None = None) -> str:
  """Call `write(file)` on a temporary file beside `path` (binary mode), fsync it and rename it
  onto `path`: readers see the old file or the whole new one. On any error the temporary file
  is removed and `path` is untouched. The folder is created if needed. `tmp_name` names the
  temporary file (default: hidden and unique to this call). Returns `path`."""
  path = os.fspath(path)
  directory, name = os.path.split(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  tmp = os.path.join(directory, tmp_name or f".{name}.{uuid.uuid4().hex[:12]}.tmp")
  try:
    with open(tmp, "wb") as f:
      write(f)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise
  _fsync_dir(directory)
  return path


def atomic_write_bytes(path: str, data: bytes, tmp_name: str | None = None) -> str:
  """Write `data` to `path` atomically (see `atomic_write`)."""
  return atomic_write(path, lambda f: f.write(data), tmp_name)


def atomic_write_text(path: str, text: str) -> str:
  """Write UTF-8 `text` to `path` atomically (see `atomic_write`)."""
  return atomic_write_bytes(path, text.encode("utf-8"))
