"""Folders written whole or not at all: `python -m jaxdiff.interop` import and export build their
output in a hidden sibling folder and move it into place only when it is complete.

A crash or kill at any moment leaves the target absent (or as it was) or complete, never half
written: a reader never sees a workdir without its checkpoint or a pipeline without its scheduler.
Local paths: one ``os.rename`` of the finished folder (an existing target that may be replaced is
first moved aside). Object stores have no folder rename: the files are moved one by one, the
marker files (``model_index.json``, ``config.json``) last, so a reader that goes by them sees the
folder complete or not at all. The hidden folders of an interrupted write (``.NAME.partial-*``)
are left for the user to delete; they never block a new write.
"""

from __future__ import annotations

import contextlib
import errno
import os
import posixpath
import uuid
from collections.abc import Iterator

from jaxdiff import fileio
from jaxdiff.errors import WorkdirError

__all__ = ["MARKERS", "check_target", "staged", "write_error"]

MARKERS = ("model_index.json", "config.json")  # written last: their presence says "complete"


def _parent_and_name(path: str) -> tuple[str, str]:
  path = fileio.abspath(path).rstrip("/")
  split = posixpath.split if fileio.is_url(path) else os.path.split
  parent, name = split(path)
  return parent, name


def check_target(path: str, *, overwrite: bool, what: str, flag: str = "--overwrite") -> None:
  """WorkdirError when `path` cannot become the folder `what`: it is a file, or a folder that is
  not empty while `overwrite` is off."""
  if fileio.isfile(path):
    raise WorkdirError(f"{what} {path} is a file, not a folder: give a new folder path.")
  if fileio.isdir(path) and fileio.listdir(path) and not overwrite:
    raise WorkdirError(
      f"{what} {path} is not empty: give a new (or empty) folder, or pass {flag} to replace what it holds."
    )


def write_error(path: str, e: OSError) -> WorkdirError:
  """The one-line error of an OS error while writing the folder `path` (read-only, full, ...)."""
  why = e.strerror or type(e).__name__
  if e.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
    fix = "give a folder on a writable disk"
  elif e.errno in (errno.ENOSPC, errno.EDQUOT):
    fix = "free space there or give a folder on a larger disk"
  else:
    fix = "check the path"
  where = e.filename if e.filename else path
  return WorkdirError(f"cannot write {path} ({where}: {why}): {fix}; nothing was written there.")


@contextlib.contextmanager
def staged(path: str, *, overwrite: bool = False, what: str = "the folder") -> Iterator[str]:
  """Yields a hidden temporary folder beside `path` to write into; when the block completes, the
  folder becomes `path` (replacing what is there if `overwrite`). On any error the temporary folder
  is removed and `path` is left as it was; an OSError becomes a WorkdirError naming `path`."""
  check_target(path, overwrite=overwrite, what=what)
  parent, name = _parent_and_name(path)
  tmp = fileio.join(parent, f".{name}.partial-{uuid.uuid4().hex[:12]}")
  try:
    fileio.makedirs(tmp)
  except OSError as e:
    raise write_error(path, e) from None
  try:
    yield tmp
    _publish(tmp, fileio.abspath(path), parent, name)
  except OSError as e:
    fileio.rmtree(tmp, ignore_errors=True)
    raise write_error(path, e) from None
  except BaseException:
    fileio.rmtree(tmp, ignore_errors=True)
    raise


def _publish(tmp: str, path: str, parent: str, name: str) -> None:
  if fileio.is_url(path):
    _publish_url(tmp, path)
    return
  if os.path.isdir(path) and os.listdir(path):
    aside = os.path.join(parent, f".{name}.replaced-{uuid.uuid4().hex[:12]}")
    _rename(path, aside)  # killed from here to the next rename: the target is absent, the old one aside
    _rename(tmp, path)
    fileio.rmtree(aside, ignore_errors=True)
  else:
    _rename(tmp, path)  # onto nothing, or onto an empty folder (POSIX replaces it)
  _fsync_dir(parent)


def _rename(src: str, dst: str) -> None:
  os.rename(src, dst)


def _fsync_dir(directory: str) -> None:
  """Make the rename durable (best effort: some file systems cannot fsync a folder)."""
  try:
    fd = os.open(directory, os.O_RDONLY)
  except OSError:
    return
  try:
    os.fsync(fd)
  except OSError:
    pass
  finally:
    os.close(fd)


def _publish_url(tmp: str, path: str) -> None:
  """Object stores: move every file, the markers last (deepest first, so a pipeline's top-level
  model_index.json is the very last object to appear)."""
  fs, inner_tmp = fileio.filesystem(tmp)
  _, inner = fileio.filesystem(path)
  if fs.exists(inner):
    fs.rm(inner, recursive=True)
  rels = [
    posixpath.relpath(posixpath.join(root, f), tmp) for root, _, names in fileio.walk(tmp) for f in names
  ]
  rels.sort(key=lambda r: (posixpath.basename(r) in MARKERS, -r.count("/"), r))
  for rel in rels:
    fs.mv(posixpath.join(inner_tmp, rel), posixpath.join(inner, rel))
  fs.rm(inner_tmp, recursive=True)
