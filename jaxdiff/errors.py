"""The exceptions jaxdiff raises for mistakes a user can fix; each CLI catches `JaxdiffError` once.

Every class also derives from the builtin its callers used to catch (ValueError, RuntimeError,
ImportError), so code written against the old per-module exceptions keeps working. `run_cli`
is the one place a command line turns them (and the OS errors that mean a bad path) into a
one-line message and exit status 2, never a trace.
"""

from __future__ import annotations

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
  "MissingDependencyError",
  "USER_ERRORS",
  "LEGACY_USER_ERRORS",
  "user_message",
  "run_cli",
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

# Plain ValueErrors that some config checks still raise (jaxdiff.data.base, jaxdiff.data.conditioning,
# jaxdiff.training.loop): train.py and sample.py report them as user errors too, until those raise
# ConfigError / DataError. Then this goes.
LEGACY_USER_ERRORS: tuple[type[BaseException], ...] = (ValueError,)


def user_message(error: BaseException) -> str:
  """The one-line text of a user error: jaxdiff's own message, or the path an OS error is about."""
  if isinstance(error, OSError) and not isinstance(error, JaxdiffError) and error.filename is not None:
    why = error.strerror or type(error).__name__
    return f"{error.filename}: {why}; check the path (and that it is readable / writable)."
  return str(error)


def run_cli(
  entry: Callable[[Sequence[str] | None], int | None],
  argv: Sequence[str] | None = None,
  *,
  prog: str | None = None,
  also: tuple[type[BaseException], ...] = (),
) -> int:
  """entry(argv)'s exit status; a user error (USER_ERRORS, and `also`) prints `[prog: ]error: message`
  on stderr and gives exit status 2. Anything else is a bug and keeps its trace."""
  try:
    return int(entry(argv) or 0)
  except (*USER_ERRORS, *also) as e:
    print(f"{prog + ': ' if prog else ''}error: {user_message(e)}", file=sys.stderr)
    return 2
