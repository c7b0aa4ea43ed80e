"""One- and two-step generation: MeanFlow, shortcut models and consistency models.

The losses (`meanflow_loss`, `shortcut_loss`, `consistency_loss`) and the (r, t) draws they train
on; `jaxdiff.loss` dispatches to them (prediction "mean_velocity" is MeanFlow's; `few_step=`
names the method). Two-time networks are called model_fn(x, t, r=r, **cond) (the models'
`second_time`), r the time a step lands on. The samplers are `meanflow`, `shortcut` and
`consistency` (`jaxdiff.samplers.few_step`).
"""

from jaxdiff.few_step.consistency import consistency_delta, consistency_loss, consistency_pair, pseudo_huber
from jaxdiff.few_step.meanflow import VELOCITIES, adaptive_weight, meanflow_loss, meanflow_target
from jaxdiff.few_step.shortcut import shortcut_loss, shortcut_target
from jaxdiff.few_step.times import meanflow_times, shortcut_times

METHODS = ("meanflow", "shortcut", "consistency")
TWO_TIME_METHODS = ("meanflow", "shortcut")

__all__ = [
  "METHODS",
  "TWO_TIME_METHODS",
  "VELOCITIES",
  "adaptive_weight",
  "consistency_delta",
  "consistency_loss",
  "consistency_pair",
  "meanflow_loss",
  "meanflow_target",
  "meanflow_times",
  "pseudo_huber",
  "shortcut_loss",
  "shortcut_target",
  "shortcut_times",
]
