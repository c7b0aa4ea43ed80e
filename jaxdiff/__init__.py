"""jaxdiff: diffusion models in JAX/Flax.

The functional core is re-exported here: schedules, the forward process and loss
(`jaxdiff.diffusion`) and the samplers (`jaxdiff.sample`).
"""

from jaxdiff import diffusion, models, samplers, schedules
from jaxdiff.diffusion import (
  convert_prediction,
  eps_from_v,
  eps_from_x0,
  loss,
  loss_weight,
  q_mean_variance,
  q_posterior,
  q_sample,
  snr,
  to_x0_eps,
  v_from_x0_eps,
  x0_from_eps,
  x0_from_v,
)
from jaxdiff.samplers import SAMPLERS, bind, nfe, sample, timesteps
from jaxdiff.schedules import Schedule

__version__ = "0.1.0"
