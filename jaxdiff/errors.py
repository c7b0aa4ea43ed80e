"""The exceptions jaxdiff raises for mistakes a user can fix; each CLI catches `JaxdiffError` once.

Every class also derives from the builtin its callers used to catch (ValueError, RuntimeError),
so code written against the old per-module exceptions keeps working.
"""

from __future__ import annotations

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
