"""jaxdiff.errors: one hierarchy behind the old import paths, and the one place CLIs turn it into a message.

`python tests/test_errors.py` lists the `raise ValueError` left in jaxdiff/ (each should become a
typed error where a user can be at fault: the CLIs report only those in one line).
"""

import ast
import errno
import glob
import logging
import os
import sys

import pytest

from jaxdiff import errors

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Modules whose user-facing checks raise typed errors only (no plain ValueError left).
TYPED_ONLY = (
  "jaxdiff/errors.py",
  "jaxdiff/perf.py",
  "jaxdiff/fileio.py",
  "jaxdiff/config_utils.py",
  "jaxdiff/training/loop.py",
  "jaxdiff/training/state.py",
  "jaxdiff/training/checkpointer.py",
  "jaxdiff/training/integrity.py",
  "jaxdiff/training/run_records.py",
  "jaxdiff/training/workdir_lock.py",
)


def plain_value_errors(root: str = ROOT) -> list[str]:
  """'path:line' of every `raise ValueError(...)` in jaxdiff/ (parsed, so comments and strings do not count)."""
  found = []
  for path in sorted(glob.glob(os.path.join(root, "jaxdiff", "**", "*.py"), recursive=True)):
    with open(path) as f:
      tree = ast.parse(f.read(), path)
    for node in ast.walk(tree):
      if isinstance(node, ast.Raise) and node.exc is not None:
        exc = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
        if isinstance(exc, ast.Name) and exc.id == "ValueError":
          found.append(f"{os.path.relpath(path, root)}:{node.lineno}")
  return found


# plain ValueErrors that are internal invariants (a bug if raised), not a user's mistake
INTERNAL_VALUE_ERRORS = {"jaxdiff/evaluation/inception.py", "jaxdiff/evaluation/frechet.py"}


def test_user_faults_raise_typed_errors_not_plain_value_errors():
  left = {where.rsplit(":", 1)[0] for where in plain_value_errors()}
  assert left <= INTERNAL_VALUE_ERRORS, (
    f"plain `raise ValueError` outside internal invariants: {sorted(left)}"
  )


def test_functional_api_argument_errors_are_typed():
  import jaxdiff

  with pytest.raises(errors.ArgumentError, match="karras grid needs"):
    jaxdiff.grids.karras(10, sigma_min=2.0, sigma_max=1.0)
  with pytest.raises(errors.SamplingError, match="Unknown sampler"):
    jaxdiff.samplers.get("no_such_sampler")


def test_old_import_paths_are_the_same_classes():
  from jaxdiff.bulk import SamplingError as bulk_sampling
  from jaxdiff.bulk.settings import SamplingError as settings_sampling
  from jaxdiff.training import CheckpointError as training_checkpoint

  assert bulk_sampling is settings_sampling is errors.SamplingError
  assert training_checkpoint is errors.CheckpointError
  # callers that caught the builtins still catch them
  assert issubclass(errors.SamplingError, ValueError) and issubclass(errors.CheckpointError, RuntimeError)
  assert issubclass(errors.ConfigError, ValueError) and issubclass(errors.DataError, ValueError)
  assert issubclass(errors.MissingDependencyError, ImportError)


def _raises(error):
  def entry(argv):
    raise error

  return entry


def test_run_cli_prints_one_line_for_user_errors(capsys):
  assert errors.run_cli(lambda argv: 0) == 0
  assert errors.run_cli(lambda argv: None) == 0
  assert errors.run_cli(_raises(errors.SamplingError("--labels=x: give a class")), prog="sample.py") == 2
  assert capsys.readouterr().err == "sample.py: error: --labels=x: give a class\n"
  missing = FileNotFoundError(2, "No such file or directory", "/nope/config.json")
  assert errors.run_cli(_raises(missing)) == 2
  err = capsys.readouterr().err
  assert err.startswith("error: /nope/config.json: No such file or directory") and "path" in err
  assert errors.run_cli(_raises(FileNotFoundError("no .npz sample shards in d"))) == 2
  assert capsys.readouterr().err == "error: no .npz sample shards in d\n"


@pytest.mark.parametrize("num", [errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.ENOTDIR])
def test_run_cli_reports_os_errors_about_a_path_in_one_line(capsys, num):
  error = OSError(num, os.strerror(num), "/out/samples")
  assert errors.run_cli(_raises(error), prog="sample.py") == 2
  err = capsys.readouterr().err
  assert err.count("\n") == 1 and err.startswith(f"sample.py: error: /out/samples: {os.strerror(num)}")


def test_run_cli_keeps_the_trace_of_bugs_and_says_they_are_bugs():
  for bug in (KeyError("a bug"), ValueError("a bug"), OSError(errno.EIO, "I/O error")):
    with pytest.raises(type(bug)) as e:
      errors.run_cli(_raises(bug), prog="train.py")
    if sys.version_info >= (3, 11):  # the line is printed under the traceback
      assert e.value.__notes__ == [f"train.py: internal error: {errors.BUG_REPORT}"]
  assert not hasattr(errors, "LEGACY_USER_ERRORS")  # a plain ValueError is not a user error


def test_cli_set_up_is_once_per_process_and_library_import_changes_nothing():
  absl_logger = logging.getLogger("absl")
  had_filter = errors._QUIET in absl_logger.filters
  hook = sys.unraisablehook
  try:
    errors.setup_cli_process()
    errors.setup_cli_process()
    assert absl_logger.filters.count(errors._QUIET) == 1 and sys.unraisablehook.jaxdiff_quiet
    record = logging.LogRecord(
      "absl", logging.ERROR, "/x/orbax/checkpoint/async.py", 1, "save failed", (), None
    )
    record.exc_info = (RuntimeError, RuntimeError("x"), None)
    assert not errors._QUIET.filter(record)  # Orbax's duplicate trace of a failed save is dropped
    asyncio_logger = logging.getLogger("asyncio")
    assert asyncio_logger.filters.count(errors._QUIET) == 1
    for path, dropped in ((f"{os.sep}x{os.sep}orbax{os.sep}serialization.py", True), ("mine.py", False)):
      try:  # an exception raised in code at `path`, as asyncio logs it for a task nobody awaited
        exec(compile("raise ValueError('RESOURCE_EXHAUSTED: no space')", path, "exec"))
      except ValueError as e:
        exc_info = (ValueError, e, e.__traceback__)
      record = logging.LogRecord(
        "asyncio", logging.ERROR, "base_events.py", 1, "Task exception was never retrieved", (), exc_info
      )
      assert errors._QUIET.filter(record) is not dropped
  finally:
    if not had_filter:
      absl_logger.removeFilter(errors._QUIET)
      logging.getLogger("asyncio").removeFilter(errors._QUIET)
    sys.unraisablehook = hook


def test_core_modules_raise_typed_errors_only():
  left = [p for p in plain_value_errors() if p.split(":")[0] in TYPED_ONLY]
  assert not left, left


if __name__ == "__main__":
  remaining = plain_value_errors()
  print("\n".join(remaining))
  print(f"{len(remaining)} `raise ValueError` left in jaxdiff/", file=sys.stderr)
