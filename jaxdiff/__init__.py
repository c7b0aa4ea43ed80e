"""jaxdiff: diffusion models in JAX/Flax.

The functional core is re-exported here: processes (`jaxdiff.processes`: the discrete chain of a
`Schedule`, VP-SDE, cosine VP, EDM, rectified flow), noise grids (`jaxdiff.grids`), the forward
process, conversions and loss (`jaxdiff.diffusion`) and the samplers (`jaxdiff.sample`,
`jaxdiff.samplers`).
"""

from jaxdiff import diffusion, grids, models, processes, samplers, schedules
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
from jaxdiff.processes import EDM, VPSDE, CosineVP, DiscreteVP, RectifiedFlow
from jaxdiff.samplers import SAMPLERS, Sampler, Stepper, bind, nfe, register, sample, timesteps
from jaxdiff.schedules import Schedule

__version__ = "0.1.0"
