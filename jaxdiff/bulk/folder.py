"""The output folder of a bulk sampling run: its manifest (`run.json`), its lock, its shards' state.

One run writes a folder at a time: `OutputLock` holds `.sample.lock` there from before the manifest
is written until the run ends (an flock the kernel drops when the process dies, however it dies;
a heartbeat object on object stores), so a second run into the same folder is refused while the
first is alive, whatever its settings. Under the lock, the folder's manifest is read again and
compared with the run (`settings.compare_manifest`) before anything is written.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import socket
import time
from typing import Any, NamedTuple

import numpy as np

from jaxdiff import fileio
from jaxdiff.bulk.settings import IDENTITY_KEYS, RunSettings, SamplingError
from jaxdiff.fileio import atomic_write_bytes
from jaxdiff.shards import check_shard, parse_shard_name, read_shard, shard_name, temp_name

__all__ = [
  "MANIFEST",
  "SUMMARY",
  "LATENTS_DIR",
  "LOCK_NAME",
  "OutputLock",
  "default_output",
  "shard_run",
  "existing_manifest",
  "Survey",
  "survey",
]

log = logging.getLogger("jaxdiff.sample")

MANIFEST = "run.json"
SUMMARY = "summary.json"
LATENTS_DIR = "latents"  # latent models with --keep_latents: the float latent shards, named as the images'
LOCK_NAME = ".sample.lock"  # in the output folder while a run writes there: host, pid, start time

# The manifest fields a shard records beyond IDENTITY_KEYS; shard_size is left out (the index check
# covers where a shard sits), as is num_samples (a run can be extended).
_SHARD_RUN_EXTRA = ("checkpoint_step", "params_digest")


def default_output(workdir: str) -> str:
  return os.path.join(fileio.abspath(workdir), "generated")


def shard_run(manifest: dict) -> dict:
  """What each shard records of its run (`shards.write_shard(run=...)`): the fields that decide
  sample i, so a shard from any other run is told apart when a folder is resumed. A field that is
  None and absent from older records (output_format) is left out, so older shards still match."""
  keys = [k for k in IDENTITY_KEYS if k != "shard_size"] + list(_SHARD_RUN_EXTRA)
  run = {k: manifest.get(k) for k in keys}
  for key in ("output_format", "latent"):
    if run.get(key) is None:
      run.pop(key, None)
  return run


def read_json(path: str) -> dict:
  with fileio.open(path) as f:
    return json.load(f)


def write_json(path: str, obj: dict, tag: str) -> None:
  atomic_write_bytes(
    path,
    (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode(),
    tmp_name=temp_name(os.path.basename(path), tag),
  )


def _ours(name: str) -> bool:
  """Files a run keeps in its folder besides shards and JSON: the lock and temporary files."""
  return name == LOCK_NAME or (name.startswith(".") and name.endswith(".tmp"))


def existing_manifest(output: str) -> dict | None:
  """The folder's manifest, None for a new or empty folder; SamplingError for anything else."""
  if fileio.exists(output) and not fileio.isdir(output):
    raise SamplingError(f"--output={output} is a file, not a folder.")
  if not fileio.isdir(output):
    return None
  path = os.path.join(output, MANIFEST)
  if not fileio.exists(path):
    foreign = [e for e in fileio.listdir(output) if not _ours(e)]
    if foreign:
      raise SamplingError(
        f"--output={output} already holds files ({', '.join(sorted(foreign)[:5])}) but no "
        f"{MANIFEST}: it is not a jaxdiff sample folder. Use a new or empty --output."
      )
    return None
  try:
    manifest = read_json(path)
  except (OSError, ValueError) as e:
    raise SamplingError(
      f"{path} cannot be read ({e}); use a new --output (or delete the damaged folder)."
    ) from None
  if not isinstance(manifest, dict):
    raise SamplingError(f"{path} is not a jaxdiff sample manifest (not a JSON object); use a new --output.")
  return manifest


def unwritable(output: str, error: OSError) -> SamplingError:
  """The one-line error for an output folder the OS refuses to write (read-only, full, not a folder)."""
  why = error.strerror or type(error).__name__
  where = f" ({error.filename})" if error.filename and str(error.filename) != output else ""
  return SamplingError(
    f"--output={output} cannot be written: {why}{where}. Choose a writable folder with space left; "
    "rerunning the same command resumes from the complete shards."
  )


class OutputLock:
  """`.sample.lock` in an output folder while a run writes there (see the module docstring).

  Taken by process 0 of a run only (the other processes write their own shards into the same
  folder, or into their own on per-host disks)."""

  def __init__(self, output: str):
    self.output = output
    self.path = os.path.join(output, LOCK_NAME)
    self._fd: int | None = None
    self._store: fileio.StoreLock | None = None

  def _busy(self, holder: dict) -> SamplingError:
    return SamplingError(
      f"--output={self.output} is being written by another sampling run (host {holder.get('host', '?')}, "
      f"pid {holder.get('pid', '?')}, started {holder.get('started', '?')}; lock {self.path}). One run "
      "writes a folder at a time: wait for it to finish (then rerun this command to resume or verify "
      "its samples), or use another --output."
    )

  def acquire(self) -> OutputLock:
    """Create the folder if needed and take the lock; SamplingError naming the holder or the path."""
    info = {
      "host": socket.gethostname(),
      "pid": os.getpid(),
      "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }
    try:
      fileio.makedirs(self.output, exist_ok=True)
      if fileio.is_url(self.path):
        try:
          self._store = fileio.StoreLock(self.path).acquire(info)
        except fileio.LockBusy as e:
          raise self._busy(e.holder) from None
        return self
      for _ in range(5):
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
          fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
          if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            holder = _read_fd(fd)
            os.close(fd)
            raise self._busy(holder) from None
          # no flock on this filesystem: the lock file still names the writer
        try:
          same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
        except FileNotFoundError:
          same = False
        if not same:  # released (deleted) by its holder between our open and flock: retry
          os.close(fd)
          continue
        os.ftruncate(fd, 0)
        os.write(fd, (json.dumps(info) + "\n").encode())
        self._fd = fd
        return self
    except OSError as e:
      raise unwritable(self.output, e) from None
    raise SamplingError(
      f"Could not take the lock {self.path}: it keeps changing. Is another run starting there?"
    )

  def release(self) -> None:
    """Delete the lock file and drop the lock (safe to call twice)."""
    store, self._store = self._store, None
    if store is not None:
      store.release()
    fd, self._fd = self._fd, None
    if fd is None:
      return
    try:
      if os.fstat(fd).st_ino == os.stat(self.path).st_ino:
        os.remove(self.path)
    except OSError:
      pass
    os.close(fd)

  def __enter__(self) -> OutputLock:
    return self.acquire()

  def __exit__(self, *exc: Any) -> None:
    self.release()


def _read_fd(fd: int) -> dict:
  try:
    os.lseek(fd, 0, os.SEEK_SET)
    return json.loads(os.read(fd, 65536).decode() or "{}")
  except (OSError, ValueError):
    return {}


def remove_superseded(output: str, start: int, end: int) -> list[str]:
  """Delete shards that start where the complete shard [start, end) starts but end elsewhere (the
  partial last shard of a run that was later extended)."""
  removed = []
  for name in fileio.listdir(output):
    r = parse_shard_name(name)
    if r is not None and r[0] == start and r[1] != end:
      fileio.remove(os.path.join(output, name))
      removed.append(name)
  return removed


def remove_temps(output: str, mine: set[tuple[int, int]]) -> None:
  """Leftover temporary files of shards this process owns (a run killed while writing; the lock
  says no other run is writing here)."""
  for name in fileio.listdir(output):
    if name.startswith(".samples_") and name.endswith(".tmp"):
      r = parse_shard_name(name[1:].rsplit(".", 2)[0])
      if r is not None and r in mine:
        fileio.remove(os.path.join(output, name))


def first_samples(output: str, shards: list[tuple[int, int]], kind: str, limit: int):
  """Up to `limit` samples (and labels) from the first shards this process can read."""
  xs, ls, got = [], [], 0
  for s, e in shards:
    path = os.path.join(output, shard_name(s, e))
    if got >= limit:
      break
    if not fileio.exists(path):
      continue
    arrays = read_shard(path)
    xs.append(arrays[kind][: limit - got])
    ls.append(arrays["labels"][: limit - got])
    got += len(xs[-1])
  if not xs:
    return None, None
  return np.concatenate(xs), np.concatenate(ls)


class Survey(NamedTuple):
  mine: list[tuple[int, int]]  # this process's shards
  todo: list[tuple[int, int]]  # those to generate: missing or damaged
  reused: int  # samples in complete shards
  regenerated: list[str]  # damaged shards generated again

  @property
  def work(self) -> int:
    return sum(e - s for s, e in self.todo)


def survey(
  output: str,
  shards: list[tuple[int, int]],
  settings: RunSettings,
  run: dict,
  process: int,
  processes: int,
  progress: bool,
) -> Survey:
  """Which of this process's shards are complete (checked, not assumed, and of this `run`) and which
  to generate."""
  mine = [sh for j, sh in enumerate(shards) if j % processes == process]
  latents = os.path.join(output, LATENTS_DIR)
  remove_temps(output, set(mine))
  if settings.keep_latents and fileio.isdir(latents):
    remove_temps(latents, set(mine))
  todo, regenerated, reused = [], [], 0
  for s, e in mine:
    path = os.path.join(output, shard_name(s, e))
    if fileio.exists(path):
      labels = settings.labels_of(np.arange(s, e))
      problem = check_shard(
        path, s, e, settings.kind, settings.data_shape, labels, run=run, dtype=settings.sample_dtype
      )
      if problem is None and settings.keep_latents:  # written before the image shard: present unless damaged
        lpath = os.path.join(latents, shard_name(s, e))
        problem = (
          check_shard(lpath, s, e, "images", settings.latent_shape, labels, run=run, dtype=np.float32)
          if fileio.exists(lpath)
          else f"its latents {lpath} are missing"
        )
      if problem is None:
        reused += e - s
        remove_superseded(output, s, e)
        if settings.keep_latents:
          remove_superseded(latents, s, e)
        continue
      log.warning("Shard %s cannot be reused (%s): generating it again.", path, problem)
      if process == 0 and progress:
        print(
          f"jaxdiff sample: {shard_name(s, e)} cannot be reused ({problem}); generating it again", flush=True
        )
      regenerated.append(shard_name(s, e))
    todo.append((s, e))
  return Survey(mine, todo, reused, regenerated)
