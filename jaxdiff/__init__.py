"""jaxdiff: diffusion models in JAX/Flax.

The functional core is re-exported here: processes (`jaxdiff.processes`: the discrete chain of a
`Schedule`, VP-SDE, cosine VP, EDM, rectified flow), noise grids (`jaxdiff.grids`), the forward
process, conversions and loss (`jaxdiff.diffusion`) and the samplers (`jaxdiff.sample`,
`jaxdiff.invert`, `jaxdiff.samplers`). `jaxdiff.load(workdir)` opens a trained run for notebooks
(`jaxdiff.notebook`); `jaxdiff.interop` reads and writes diffusers folders (no torch needed).
"""

import importlib

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
from jaxdiff.samplers import SAMPLERS, Sampler, Stepper, bind, invert, nfe, register, sample, timesteps
from jaxdiff.schedules import Schedule

__version__ = "0.1.0"

# The notebook path (`jaxdiff.load(workdir)`) lives in the services layer (checkpoints, configs):
# it is imported on first use, so `import jaxdiff` stays the light functional core. So is the
# diffusers interop package (`jaxdiff.interop`, a module rather than a name inside one).
_LAZY = {"load": "jaxdiff.notebook", "LoadedModel": "jaxdiff.notebook", "interop": "jaxdiff.interop"}


def __getattr__(name: str):
  if name not in _LAZY:
    raise AttributeError(f"module 'jaxdiff' has no attribute {name!r}")
  module = importlib.import_module(_LAZY[name])
  value = module if module.__name__ == f"jaxdiff.{name}" else getattr(module, name)
  globals()[name] = value
  return value


def __dir__():
  return sorted(set(globals()) | set(_LAZY))
