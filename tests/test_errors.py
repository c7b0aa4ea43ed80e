"""jaxdiff.errors: one hierarchy behind the old import paths, and the one place CLIs turn it into a message."""

import pytest

from jaxdiff import errors


def test_old_import_paths_are_the_same_classes():
  from jaxdiff.bulk import SamplingError as bulk_sampling
  from jaxdiff.bulk.settings import SamplingError as settings_sampling
  from jaxdiff.training import CheckpointError as training_checkpoint
  from jaxdiff.training.checkpoints import CheckpointError

  assert bulk_sampling is settings_sampling is errors.SamplingError
  assert training_checkpoint is CheckpointError is errors.CheckpointError
  # callers that caught the builtins still catch them
  assert issubclass(errors.SamplingError, ValueError) and issubclass(errors.CheckpointError, RuntimeError)
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


def test_run_cli_keeps_the_trace_of_bugs():
  with pytest.raises(KeyError):
    errors.run_cli(_raises(KeyError("a bug")))
  with pytest.raises(ValueError):  # a plain ValueError is not a user error any more
    errors.run_cli(_raises(ValueError("a bug")))
  # ... except where a CLI still takes the config checks that raise plain ValueErrors
  assert errors.run_cli(_raises(ValueError("config.data.name='x'")), also=errors.LEGACY_USER_ERRORS) == 2
