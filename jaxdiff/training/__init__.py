"""Training: the train state with EMA, the pure step, Orbax checkpoints (`checkpointer`, `integrity`,
`workdir_lock`, `run_records`) and the loop."""

from jaxdiff.errors import CheckpointError
from jaxdiff.perf import setup_compilation_cache  # re-exported: its home is jaxdiff.perf
from jaxdiff.training.checkpointer import Checkpointer
from jaxdiff.training.loop import NonFiniteLossError, TrainingError, WorkdirError, train
from jaxdiff.training.run_records import load_config, save_config
from jaxdiff.training.state import (
  TrainState,
  create_optimizer,
  create_train_state,
  ema_decay,
  ema_update,
  learning_rate_schedule,
)
from jaxdiff.training.step import make_multi_step, make_train_step
