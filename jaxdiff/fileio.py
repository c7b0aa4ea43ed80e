"""Every file jaxdiff writes or reads goes through this module, for local paths and object stores alike.

A path is a local path or a URL (`gs://bucket/run`, `s3://...`, `memory://...`: any protocol
fsspec knows; gs:// needs `gcsfs`, the `gcs` extra). Local paths use plain `os` (fsync, atomic
rename); URLs go through fsspec. Orbax checkpoints are not written here (Orbax has its own path
layer, etils.epath + TensorStore: local paths, gs:// and s3://).

"Never half a file": `atomic_write` writes a temporary file (local: in the same folder, fsynced,
then `os.replace`; object stores: a hidden temporary object, then a server-side move, and the
size of the result is checked before the temporary is gone), so a reader or a crash sees the old
file or the whole new one. Temporary names start with "." and end with ".tmp": readers listing
`*.npz` or `*.json` never see them. `StoreLock` is a lock file for stores without flock.
"""

from __future__ import annotations

import builtins
import fnmatch
import io
import json
import os
import posixpath
import re
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import IO, Any, BinaryIO

import fsspec

__all__ = [
  "atomic_write",
  "atomic_write_bytes",
  "atomic_write_text",
  "append_text",
  "is_url",
  "abspath",
  "join",
  "exists",
  "isdir",
  "isfile",
  "listdir",
  "makedirs",
  "remove",
  "rmtree",
  "getsize",
  "walk",
  "open",
  "readable",
  "read_bytes",
  "read_text",
  "glob",
  "filesystem",
  "StoreLock",
  "pid_alive",
  "LockBusy",
]

_URL = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://")


def is_url(path: str | os.PathLike) -> bool:
  """True for `scheme://...` paths other than file:// (those are local)."""
  m = _URL.match(os.fspath(path))
  return bool(m) and m.group(1).lower() != "file"


def _local(path: str | os.PathLike) -> str:
  p = os.fspath(path)
  return p[len("file://") :] if p.lower().startswith("file://") else p


def filesystem(path: str) -> tuple[Any, str]:
  """(fsspec file system, path within it) of a URL; ImportError naming the package to install."""
  try:
    fs, inner = fsspec.core.url_to_fs(path)
  except ImportError as e:
    raise ImportError(
      f"{path}: {e}. For gs:// paths install the gcs extra (pip install 'jaxdiff[gcs]', i.e. gcsfs); "
      "for other stores, their fsspec package."
    ) from None
  return fs, inner


def abspath(path: str | os.PathLike) -> str:
  """An absolute local path, or the URL unchanged (`os.path.abspath` would mangle `gs://`)."""
  if is_url(path):
    return os.fspath(path).rstrip("/")
  return os.path.abspath(_local(path))


def join(path: str | os.PathLike, *parts: str) -> str:
  """`os.path.join` for local paths, "/" for URLs."""
  if is_url(path):
    return posixpath.join(os.fspath(path), *parts)
  return os.path.join(_local(path), *parts)


def exists(path: str | os.PathLike) -> bool:
  if is_url(path):
    fs, inner = filesystem(os.fspath(path))
    return bool(fs.exists(inner))
  return os.path.exists(_local(path))


def isdir(path: str | os.PathLike) -> bool:
  if is_url(path):
    fs, inner = filesystem(os.fspath(path))
    return bool(fs.isdir(inner))
  return os.path.isdir(_local(path))


def isfile(path: str | os.PathLike) -> bool:
  if is_url(path):
    fs, inner = filesystem(os.fspath(path))
    return bool(fs.isfile(inner))
  return os.path.isfile(_local(path))


def listdir(path: str | os.PathLike) -> list[str]:
  """The names (not paths) in a folder, like `os.listdir`; FileNotFoundError if there is none."""
  if is_url(path):
    fs, inner = filesystem(os.fspath(path))
    if not fs.isdir(inner):
      raise FileNotFoundError(f"no such folder: {path}")
    return [posixpath.basename(p.rstrip("/")) for p in fs.ls(inner, detail=False)]
  return os.listdir(_local(path))


def makedirs(path: str | os.PathLike, exist_ok: bool = True) -> None:
  """Create a folder and its parents (object stores: a no-op where folders are implicit)."""
  if is_url(path):
    fs, inner = filesystem(os.fspath(path))
    fs.makedirs(inner, exist_ok=exist_ok)
    return
  os.makedirs(_local(path), exist_ok=exist_ok)


def remove(path: str | os.PathLike) -> None:
  """Delete one file; FileNotFoundError if it does not exist."""
  if is_url(path):
    fs, inner = filesystem(os.fspath(path))
    if not fs.isfile(inner):
      raise FileNotFoundError(f"no such file: {path}")
    fs.rm_file(inner)
    return
  os.remove(_local(path))


def rmtree(path: str | os.PathLike, ignore_errors: bool = True) -> None:
  """Delete a folder and everything in it (nothing if it does not exist); errors are ignored
  unless `ignore_errors=False`, as `shutil.rmtree`."""
  if is_url(path):
    fs, inner = filesystem(os.fspath(path))
    try:
      if fs.exists(inner):
        fs.rm(inner, recursive=True)
    except OSError:
      if not ignore_errors:
        raise
    return
  shutil.rmtree(_local(path), ignore_errors=ignore_errors)


def getsize(path: str | os.PathLike) -> int:
  """A file's size in bytes."""
  if is_url(path):
    fs, inner = filesystem(os.fspath(path))
    return int(fs.size(inner))
  return os.path.getsize(_local(path))


def walk(top: str | os.PathLike) -> Iterator[tuple[str, list[str], list[str]]]:
  """(folder, subfolder names, file names) for `top` and every folder below it, as `os.walk`;
  folders are URLs under a URL."""
  if not is_url(top):
    yield from os.walk(_local(top))
    return
  top = os.fspath(top).rstrip("/")
  fs, inner = filesystem(top)
  base = fs._strip_protocol(inner).rstrip("/")
  for root, dirs, files in fs.walk(inner):
    rel = posixpath.relpath(fs._strip_protocol(root).rstrip("/"), base)
    yield (top if rel == "." else posixpath.join(top, rel)), sorted(dirs), sorted(files)


def open(path: str | os.PathLike, mode: str = "r", encoding: str | None = None) -> IO:
  """Open a file for reading ("r", "rb") or for a plain (non-atomic) write; writes of whole files
  should use `atomic_write`."""
  if is_url(path):
    fs, inner = filesystem(os.fspath(path))
    if "b" in mode:
      return fs.open(inner, mode)
    return fs.open(inner, mode, encoding=encoding or "utf-8")
  return builtins.open(_local(path), mode, encoding=None if "b" in mode else (encoding or "utf-8"))


def readable(path: str | os.PathLike) -> str | io.BytesIO:
  """What `np.load` / `PIL.Image.open` should be given: a local path itself, or a URL's bytes in
  memory (one download instead of a zip reader's many small seeks on an object store)."""
  if is_url(path):
    return io.BytesIO(read_bytes(path))
  return _local(path)


def read_bytes(path: str | os.PathLike) -> bytes:
  with open(path, "rb") as f:
    return f.read()


def read_text(path: str | os.PathLike) -> str:
  return read_bytes(path).decode("utf-8")


def glob(folder: str | os.PathLike, pattern: str) -> list[str]:
  """Sorted paths (URLs for URLs) of the entries of `folder` matching the shell `pattern`."""
  names = [n for n in listdir(folder) if _fnmatch(n, pattern)] if isdir(folder) else []
  return sorted(join(folder, n) for n in names)


def _fnmatch(name: str, pattern: str) -> bool:
  return fnmatch.fnmatchcase(name, pattern)


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


def _temp(name: str, tmp_name: str | None) -> str:
  return tmp_name or f".{name}.{uuid.uuid4().hex[:12]}.tmp"


def _atomic_write_local(path: str, write: Callable[[BinaryIO], object], tmp_name: str | None) -> str:
  directory, name = os.path.split(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  tmp = os.path.join(directory, _temp(name, tmp_name))
  try:
    with builtins.open(tmp, "wb") as f:
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


def _atomic_write_url(path: str, write: Callable[[BinaryIO], object], tmp_name: str | None) -> str:
  fs, inner = filesystem(path)
  directory, name = posixpath.split(inner.rstrip("/"))
  buf = io.BytesIO()
  buf.name = _temp(name, tmp_name)  # what a writer asking f.name sees, as for local files
  write(buf)  # a failing writer leaves the store untouched
  data = buf.getvalue()
  tmp = posixpath.join(directory, buf.name)
  fs.makedirs(directory, exist_ok=True)
  try:
    with fs.open(tmp, "wb") as f:
      f.write(data)
    # rename where the store has one; object stores copy server-side (the new object appears
    # whole) and delete the temporary
    fs.mv(tmp, inner)
    fs.invalidate_cache(directory)
    size = fs.size(inner)
    if size != len(data):
      raise OSError(f"{path}: {size} bytes after the move instead of {len(data)}")
  except BaseException:
    try:
      if fs.exists(tmp):
        fs.rm_file(tmp)
    except Exception:  # the original error is the one worth reporting
      pass
    raise
  return path


def atomic_write(path: str, write: Callable[[BinaryIO], object], tmp_name: str | None = None) -> str:
  """Call `write(file)` on a temporary file beside `path` (binary mode) and move the finished
  file onto `path`: readers see the old file or the whole new one. On any error the temporary
  file is removed and `path` is untouched. The folder is created if needed. `tmp_name` names the
  temporary file (default: hidden and unique to this call). Local paths and URLs. Returns `path`."""
  path = os.fspath(path)
  if is_url(path):
    return _atomic_write_url(path, write, tmp_name)
  return _atomic_write_local(_local(path), write, tmp_name)


def atomic_write_bytes(path: str, data: bytes, tmp_name: str | None = None) -> str:
  """Write `data` to `path` atomically (see `atomic_write`)."""
  return atomic_write(path, lambda f: f.write(data), tmp_name)


def atomic_write_text(path: str, text: str) -> str:
  """Write UTF-8 `text` to `path` atomically (see `atomic_write`)."""
  return atomic_write_bytes(path, text.encode("utf-8"))


def append_text(path: str, text: str) -> str:
  """Append `text` to a log file (metrics.jsonl). Local: an ordinary append, flushed. Object stores
  cannot append: the object is read and written again whole (atomically), so a reader never sees
  a torn line; this costs the file's size per call, so call it at log intervals, not per step.
  The folder is created if needed."""
  path = os.fspath(path)
  if not is_url(path):
    os.makedirs(os.path.dirname(os.path.abspath(_local(path))), exist_ok=True)
    with builtins.open(_local(path), "a", encoding="utf-8") as f:
      f.write(text)
      f.flush()
    return path
  old = read_bytes(path) if exists(path) else b""
  return atomic_write_bytes(path, old + text.encode("utf-8"))


class LockBusy(Exception):
  """Raised by `StoreLock.acquire` when another live holder has the lock: `.holder` (its JSON) and
  `.age` (seconds since its last heartbeat)."""

  def __init__(self, holder: dict, age: float):
    super().__init__(f"held by {holder} (heartbeat {age:.0f}s ago)")
    self.holder, self.age = holder, age


def pid_alive(pid: int) -> bool:
  """Whether a process with this id runs on this host (0 or negative: no process named)."""
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  return pid > 0


class StoreLock:
  """A lock file on an object store (no flock, no O_EXCL there): `path` holds JSON with the holder's
  host, pid and `beat` (the time of its last heartbeat, rewritten every `heartbeat_s` by a thread).
  A lock is stale, and taken over, when its beat is older than `stale_s`, or when its holder is a
  process of this host that is gone. Best effort: a store without conditional writes cannot make
  "create if absent" atomic, so the lock is read back after it is written (two runs starting in
  the same instant are told apart by who wrote last)."""

  def __init__(self, path: str, heartbeat_s: float = 30.0, stale_s: float = 600.0):
    self.path, self.heartbeat_s, self.stale_s = os.fspath(path), float(heartbeat_s), float(stale_s)
    self.info: dict | None = None
    self._stop = threading.Event()
    self._thread: threading.Thread | None = None

  def holder(self) -> tuple[dict, float] | None:
    """(the holder's JSON, seconds since its heartbeat), or None when there is no lock file."""
    try:
      holder = json.loads(read_text(self.path) or "{}")
    except FileNotFoundError:
      return None
    except ValueError:
      holder = {}
    return holder, time.time() - float(holder.get("beat", 0.0))

  def _mine(self, holder: dict) -> bool:
    return self.info is not None and all(holder.get(k) == self.info[k] for k in ("host", "pid", "token"))

  def acquire(self, info: dict) -> StoreLock:
    """Take the lock with `info` (JSON-able: host, pid, ...); LockBusy when a live run holds it."""
    current = self.holder()
    if current is not None:
      holder, age = current
      same_host_dead = holder.get("host") == info.get("host") and not pid_alive(int(holder.get("pid", 0)))
      if holder.get("pid") != info.get("pid") or holder.get("host") != info.get("host"):
        if age < self.stale_s and not same_host_dead:
          raise LockBusy(holder, age)
    self.info = {**info, "token": uuid.uuid4().hex}
    self._write()
    time.sleep(0.05)
    back = self.holder()
    if back is None or not self._mine(back[0]):
      self.info = None
      raise LockBusy(back[0] if back else {}, back[1] if back else 0.0)
    self._stop.clear()
    self._thread = threading.Thread(target=self._beat, name="jaxdiff-store-lock", daemon=True)
    self._thread.start()
    return self

  def _write(self) -> None:
    atomic_write_text(self.path, json.dumps({**self.info, "beat": time.time()}) + "\n")

  def _beat(self) -> None:
    while not self._stop.wait(self.heartbeat_s):
      try:
        self._write()
      except Exception:  # a missed heartbeat is not worth stopping the run
        pass

  def release(self) -> None:
    """Stop the heartbeat and delete the lock file if it is still ours (safe to call twice)."""
    if self.info is None:
      return
    self._stop.set()
    if self._thread is not None:
      self._thread.join(timeout=5)
    try:
      current = self.holder()
      if current is not None and self._mine(current[0]):
        remove(self.path)
    except OSError:
      pass
    self.info = None
