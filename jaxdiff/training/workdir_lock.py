"""One training run per folder: `train.lock` in the workdir (and in a checkpoint folder outside it).

The lock file names the holder (host, pid, start time); locally it is an flock the kernel drops
when the process dies, and its modification time is a heartbeat for runs on other hosts (a shared
filesystem). On an object store it is a heartbeat object (`fileio.StoreLock`).
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import socket
import threading
import time

from jaxdiff import fileio
from jaxdiff.errors import WorkdirError

__all__ = ["WorkdirLock", "LOCK_NAME"]

log = logging.getLogger(__name__)

LOCK_NAME = "train.lock"  # in the workdir while train.py runs: host, pid, start time; mtime = heartbeat


class WorkdirLock:
  """`folder/train.lock` while a training run writes there: one run per workdir (and per
  checkpoint folder outside it).

  The file holds the host, pid and start time of the run; its modification time is a heartbeat
  (touched every `heartbeat_s`). The run also holds an flock on it, which the kernel drops when
  the process dies, however it dies. A lock is stale, and taken over, when its flock is free on
  this host (its process is gone) and, for a run on another host (a shared filesystem where
  flock may not reach), when its heartbeat is older than `stale_s`. Released (deleted) on exit.
  """

  def __init__(self, workdir: str, heartbeat_s: float = 30.0, stale_s: float = 600.0, what: str = "workdir"):
    self.workdir = fileio.abspath(workdir)
    self.what = what  # how messages name the folder
    self.path = os.path.join(self.workdir, LOCK_NAME)
    self.heartbeat_s, self.stale_s = float(heartbeat_s), float(stale_s)
    self.host = socket.gethostname()
    self._fd: int | None = None
    self._store: fileio.StoreLock | None = None  # on object stores (no flock there)
    self._stop = threading.Event()
    self._thread: threading.Thread | None = None

  @staticmethod
  def _read(fd: int) -> dict:
    try:
      os.lseek(fd, 0, os.SEEK_SET)
      return json.loads(os.read(fd, 65536).decode() or "{}")
    except (OSError, ValueError):
      return {}

  def _busy(self, holder: dict, age: float) -> WorkdirError:
    return WorkdirError(
      f"{self.workdir} ({self.what}) is in use by another training run: host {holder.get('host', '?')}, pid "
      f"{holder.get('pid', '?')}, started {holder.get('started', '?')} (lock {self.path}, heartbeat "
      f"{age:.0f}s ago). Two runs on one {self.what} would interleave checkpoints and metrics. Wait for it "
      "to finish or stop it, or use another --workdir. A lock whose process is gone does not block on its "
      f"own host, and after {self.stale_s / 60:.0f} minutes without a heartbeat on any other."
    )

  def acquire(self) -> WorkdirLock:
    """Take the lock; WorkdirError naming the holder when another live run has it."""
    if fileio.is_url(self.path):
      return self._acquire_store()
    for _ in range(5):
      fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
      flocked = True
      try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
      except OSError as e:
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
          holder, age = self._read(fd), time.time() - os.fstat(fd).st_mtime
          os.close(fd)
          raise self._busy(holder, age) from None
        flocked = False  # no flock on this filesystem: the heartbeat decides
      try:
        same_file = os.fstat(fd).st_ino == os.stat(self.path).st_ino
      except FileNotFoundError:
        same_file = False
      if not same_file:  # released (deleted) by its holder between our open and flock: retry
        os.close(fd)
        continue
      holder = self._read(fd)
      age = time.time() - os.fstat(fd).st_mtime
      if holder and holder.get("pid") != os.getpid():
        if holder.get("host") == self.host:
          live = not flocked and fileio.pid_alive(int(holder.get("pid", 0)))
        else:
          live = age < self.stale_s
        if live:
          os.close(fd)
          raise self._busy(holder, age)
        log.warning(
          "Taking over the stale lock %s (host %s, pid %s).", self.path, holder.get("host"), holder.get("pid")
        )
      info = {"host": self.host, "pid": os.getpid(), "started": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
      os.ftruncate(fd, 0)
      os.lseek(fd, 0, os.SEEK_SET)
      os.write(fd, (json.dumps(info) + "\n").encode())
      os.fsync(fd)
      self._fd = fd
      self._stop.clear()
      self._thread = threading.Thread(target=self._beat, name="jaxdiff-workdir-lock", daemon=True)
      self._thread.start()
      return self
    raise WorkdirError(
      f"Could not take the lock {self.path}: it keeps changing. Is another run starting there?"
    )

  def _acquire_store(self) -> WorkdirLock:
    """A workdir on an object store: a heartbeat lock object (`fileio.StoreLock`) instead of flock."""
    store = fileio.StoreLock(self.path, self.heartbeat_s, self.stale_s)
    info = {"host": self.host, "pid": os.getpid(), "started": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
    try:
      self._store = store.acquire(info)
    except fileio.LockBusy as e:
      raise self._busy(e.holder, e.age) from None
    return self

  def _beat(self) -> None:
    while not self._stop.wait(self.heartbeat_s):
      try:
        os.utime(self.path)
      except OSError:
        pass

  def release(self) -> None:
    """Delete the lock file and drop the flock (safe to call twice)."""
    store, self._store = self._store, None
    if store is not None:
      store.release()
      return
    fd, self._fd = self._fd, None
    if fd is None:
      return
    self._stop.set()
    if self._thread is not None:
      self._thread.join(timeout=5)
    try:
      if os.fstat(fd).st_ino == os.stat(self.path).st_ino:
        os.remove(self.path)
    except OSError:
      pass
    os.close(fd)

  def __enter__(self) -> WorkdirLock:
    return self.acquire()

  def __exit__(self, *exc) -> None:
    self.release()
