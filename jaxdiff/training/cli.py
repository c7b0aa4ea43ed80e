"""The `jaxdiff-train` command (also `python train.py`): python train.py --config=configs/digits.py --workdir=runs/digits.

Only flags here; the work is `jaxdiff.training.train(config, workdir)`. Override any config
field with --config.<section>.<field>=value. Running again with the same workdir resumes; for a
workdir that already holds a run (or one made by `python -m jaxdiff.interop import`), --config may
be left out and the workdir's config.json is used.
"""

import errno
import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from jaxdiff import fileio, parallel
from jaxdiff.config_utils import parse_flags
from jaxdiff.errors import ConfigError, WorkdirError, run_cli
from jaxdiff.parallel import define_process_flags
from jaxdiff.perf import setup_compilation_cache
from jaxdiff.training import train
from jaxdiff.training.autoencoder_step import train_autoencoder
from jaxdiff.training.run_records import load_config

_CONFIG = config_flags.DEFINE_config_file(
  "config",
  None,
  "Config file (configs/<name>.py). Optional for a workdir that holds a run: its config.json is used.",
  lock_config=True,
)
_WORKDIR = flags.DEFINE_string(
  "workdir", None, "Where checkpoints, logs and samples go (resumes if present)."
)
_INIT_PROCESSES = define_process_flags()
flags.adopt_module_key_flags(parallel)  # listed by --help
flags.mark_flags_as_required(["workdir"])


def _config(workdir: str):
  """--config's config, or (without --config) the config.json of a workdir that already holds a run."""
  if _CONFIG.value is not None:
    return _CONFIG.value
  if not fileio.exists(fileio.join(workdir, "config.json")):
    raise ConfigError(
      f"--config is missing and {workdir} holds no run (no config.json) to resume: pass "
      "--config=configs/<name>.py to start one."
    )
  logging.warning("No --config: using %s", fileio.join(workdir, "config.json"))
  return load_config(workdir)


def _train(_argv) -> None:
  _INIT_PROCESSES()
  try:
    config = _config(_WORKDIR.value)
    setup_compilation_cache(str(config.train.compilation_cache_dir))  # process-wide: once, here
    if config.model.name == "autoencoder_kl":  # an autoencoder for latent diffusion
      train_autoencoder(config, _WORKDIR.value)
    else:
      train(config, _WORKDIR.value)
  except OSError as e:
    if e.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
      raise
    raise WorkdirError(
      f"{e.filename or _WORKDIR.value}: {e.strerror or 'no space left'} (the disk is full). Free space "
      "there (or give a --workdir on a larger disk) and rerun the same command: it resumes from the "
      "newest complete checkpoint."
    ) from None


def main(argv) -> int:
  """absl main: one line and exit status 2 for a user error, a traceback for a bug."""
  if len(argv) > 1:  # absl leaves unparsed words here: a flag without "--", or a stray value
    print(
      f"train.py: error: unexpected arguments {argv[1:]}; every option is a flag "
      "(--config=..., --workdir=..., --config.<section>.<field>=...).",
      file=sys.stderr,
    )
    return 2
  logging.set_verbosity(logging.WARNING)
  try:
    return run_cli(_train, prog="train.py")  # user errors: one line, status 2, no trace
  except KeyboardInterrupt:  # Ctrl-C before the loop (or twice): the loop itself saves on the first
    print(
      "train.py: interrupted; nothing more was saved. The newest complete checkpoint is kept: rerun the "
      "same command to resume.",
      file=sys.stderr,
    )
    return 130


def run() -> None:
  """The command's entry point (the console script and train.py): --help lists this module's flags."""
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  for flag in flags.FLAGS.get_key_flags_for_module(sys.modules[__name__]):
    flags.FLAGS.register_key_flag_for_module(sys.argv[0], flag)
  app.run(main, flags_parser=parse_flags)  # a bad --config / --config.<field>: one line, status 2
