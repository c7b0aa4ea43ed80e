"""The exceptions jaxdiff raises for mistakes a user can fix; each CLI catches `JaxdiffError` once.

Every class also derives from the builtin its callers used to catch (ValueError, RuntimeError,
ImportError), so code written against the old per-module exceptions keeps working. `run_cli`
is the one place a command line turns them (and the OS errors that mean a bad path) into a
one-line message and exit status 2, never a trace. Any other exception is a bug: it keeps its
traceback, under one line saying so. `run_cli` also configures the process once for a command
line (`setup_cli_process`): library calls leave logging and interpreter state alone.
"""

from __future__ import annotations

import errno
import logging
import os
import sys
from collections.abc import Callable, Sequence

__all__ = [
  "JaxdiffError",
  "ConfigError",
  "CheckpointError",
  "TrainingError",
  "NonFiniteLossError",
  "WorkdirError",
  "DataError",
  "DatasetNotFoundError",
  "SamplingError",
  "ArgumentError",
  "MissingDependencyError",
  "USER_ERRORS",
  "BUG_REPORT",
  "USER_ERRNOS",
  "is_user_error",
  "user_message",
  "run_cli",
  "setup_cli_process",
]


class JaxdiffError(Exception):
  """Base of every error whose message names the problem and the fix."""


class ConfigError(JaxdiffError, ValueError):
  """A config field is missing, misspelled, of the wrong type or an invalid combination."""


class CheckpointError(JaxdiffError, RuntimeError):
  """No usable checkpoint: damaged, incompatible with the config, or unwritable."""


class TrainingError(JaxdiffError, RuntimeError):
  """Training cannot go on (the message says why and what to change)."""


class NonFiniteLossError(TrainingError):
  """The loss became NaN or Inf."""


class WorkdirError(TrainingError):
  """The workdir cannot be used (unwritable, or holds another kind of run)."""


class DataError(JaxdiffError, ValueError):
  """The data set cannot be read or does not fit the config."""


class DatasetNotFoundError(DataError):
  """The named data set is not prepared locally (nothing is downloaded at run time)."""


class SamplingError(JaxdiffError, ValueError):
  """Invalid sampling settings or inputs (sampler options, shapes, conditioning)."""


class ArgumentError(JaxdiffError, ValueError):
  """An argument of a library function is out of range, of the wrong shape or type, or an invalid
  combination (the functional API's counterpart of ConfigError)."""


class MissingDependencyError(JaxdiffError, ImportError):
  """An optional dependency (TensorFlow, torch, ...) is needed for what was asked; the message says
  what to install or what to do instead."""


# What a command line reports as a message: jaxdiff's own errors and the OS errors of a bad path.
USER_ERRORS: tuple[type[BaseException], ...] = (
  JaxdiffError,
  FileNotFoundError,
  NotADirectoryError,
  IsADirectoryError,
  PermissionError,
)

# The line under the traceback of an exception that is not a user error.
BUG_REPORT = (
  "this is a bug in jaxdiff (or in a library it calls), not a mistake in the command: please report it "
  "on jaxdiff's issue tracker with the command line, the traceback above and `pip freeze`."
)


# OS errors that mean the command named a path that cannot be used, whatever their class.
USER_ERRNOS = frozenset(
  {
    errno.EROFS,
    errno.ENOSPC,
    errno.EDQUOT,
    errno.EFBIG,
    errno.ENOTDIR,
    errno.EISDIR,
    errno.EACCES,
    errno.EPERM,
    errno.ENOENT,
    errno.ENAMETOOLONG,
    errno.ELOOP,
  }
)


def is_user_error(error: BaseException) -> bool:
  """Whether a CLI reports `error` as one line: a JaxdiffError, or an OS error about a path the
  user gave (missing, unwritable, read-only, full, not a folder)."""
  if isinstance(error, USER_ERRORS):
    return True
  return isinstance(error, OSError) and error.errno in USER_ERRNOS and error.filename is not None


def user_message(error: BaseException) -> str:
  """The one-line text of a user error: jaxdiff's own message, or the path an OS error is about."""
  if isinstance(error, OSError) and not isinstance(error, JaxdiffError) and error.filename is not None:
    why = error.strerror or type(error).__name__
    return f"{error.filename}: {why}; check the path (and that it is readable / writable, with space left)."
  return str(error)


def run_cli(
  entry: Callable[[Sequence[str] | None], int | None],
  argv: Sequence[str] | None = None,
  *,
  prog: str | None = None,
  also: tuple[type[BaseException], ...] = (),
) -> int:
  """entry(argv)'s exit status, for a command line's entry point (it calls `setup_cli_process`
  first). A user error (`is_user_error`, and the classes in `also`) prints `[prog: ]error:
  message` on stderr and gives exit status 2. Anything else is a bug: it propagates with its
  traceback, which ends with the line `[prog: ]internal error: ...` (BUG_REPORT)."""
  setup_cli_process()
  try:
    return int(entry(argv) or 0)
  except Exception as e:
    if is_user_error(e) or isinstance(e, also):
      print(f"{prog + ': ' if prog else ''}error: {user_message(e)}", file=sys.stderr)
      return 2
    line = f"{prog + ': ' if prog else ''}internal error: {BUG_REPORT}"
    if hasattr(e, "add_note"):  # printed under the traceback (Python >= 3.11)
      e.add_note(line)
    else:
      print(line.replace("the traceback above", "the traceback below"), file=sys.stderr)
    raise


class _QuietOrbaxTraces(logging.Filter):
  """Drops the ERROR records with tracebacks of a failed background save: those Orbax logs, and
  asyncio's "Task exception was never retrieved" for Orbax's other write tasks. The failure is
  raised again in the main thread, where the CLI reports it in one line."""

  def filter(self, record: logging.LogRecord) -> bool:
    if record.levelno < logging.ERROR or not record.exc_info:
      return True
    return not ("orbax" in record.pathname or _raised_in_orbax(record.exc_info[2]))


def _raised_in_orbax(tb) -> bool:
  """Whether a traceback passes through Orbax's code."""
  while tb is not None:
    if f"{os.sep}orbax{os.sep}" in tb.tb_frame.f_code.co_filename:
      return True
    tb = tb.tb_next
  return False


def _drop_closed_loop_callbacks(hook):
  """sys.unraisablehook that drops "Event loop is closed": after a failed save (a full disk),
  TensorStore's other pending writes finish into the event loop Orbax has closed, and each would
  print a trace of that; the failure itself is reported once, by the CLI."""

  def quiet(unraisable):
    if unraisable.exc_type is RuntimeError and str(unraisable.exc_value) == "Event loop is closed":
      return
    hook(unraisable)

  quiet.jaxdiff_quiet = True
  return quiet


_QUIET = _QuietOrbaxTraces()


def setup_cli_process() -> None:
  """Once per command-line process (`run_cli` calls it; idempotent): Orbax's duplicate traces of a
  failed save are filtered from absl's and asyncio's loggers and the closed-event-loop noise after it from
  `sys.unraisablehook`. Library functions never change this global state themselves."""
  for name in ("absl", "asyncio"):
    logger = logging.getLogger(name)
    if _QUIET not in logger.filters:
      logger.addFilter(_QUIET)
  if not getattr(sys.unraisablehook, "jaxdiff_quiet", False):
    sys.unraisablehook = _drop_closed_loop_callbacks(sys.unraisablehook)
