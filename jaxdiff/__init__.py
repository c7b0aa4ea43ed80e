"""jaxdiff: diffusion models in JAX/Flax.

The functional core is re-exported here: schedules, the forward process and loss
(`jaxdiff.diffusion`) and the samplers (`jaxdiff.sample`).
"""

from jaxdiff import schedules
from jaxdiff import diffusion
from jaxdiff import samplers
from jaxdiff import models
from jaxdiff.diffusion import (
    q_sample,
    q_posterior,
    q_mean_variance,
    snr,
    x0_from_eps,
    eps_from_x0,
    v_from_x0_eps,
    x0_from_v,
    eps_from_v,
    to_x0_eps,
    convert_prediction,
    loss_weight,
    loss,
)
from jaxdiff.samplers import sample, bind, nfe, timesteps, SAMPLERS
from jaxdiff.schedules import Schedule

__version__ = "0.1.0"
