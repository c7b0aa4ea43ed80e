"""Samplers: every method one small class in a registry, every run one `lax.scan` in one jit.

`jaxdiff.sample(model_fn, process, shape, key, sampler=..., num_steps=..., ts=..., prediction=...)`
is the entry point (`scan.py`). Built in: ddpm, ddim, euler, euler_ancestral, heun
(`single_step.py`), dpmpp_2m, dpmpp_3m, dpmpp_2m_sde, unipc (`multistep.py`), k-diffusion's lms, dpm_2,
dpm_2_ancestral, dpmpp_sde and dpm_adaptive (`kdiffusion.py`). Add your own by
subclassing `Sampler` (a `flax.struct` dataclass whose fields are its options: traced, or `static`)
and calling `register`. `Stepper` (`stepper.py`) runs the same steps one call at a time;
`invert` runs a deterministic sampler backwards, from data to the first grid time.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from jaxdiff import grids
from jaxdiff.processes import as_process
from jaxdiff.samplers import base, few_step, kdiffusion, multistep, single_step  # noqa: F401 (they register samplers)
from jaxdiff.samplers.base import (
  INPAINT_SAMPLERS,
  SAMPLERS,
  Context,
  Denoised,
  Sampler,
  State,
  StepInput,
  available,
  ddim_update,
  get,
  register,
  static,
)
from jaxdiff.samplers.inpaint import repaint_schedule
from jaxdiff.samplers.inversion import invert
from jaxdiff.samplers.multistep import DPMSolverPP2M, DPMSolverPP2MSDE, DPMSolverPP3M, UniPC
from jaxdiff.samplers.scan import (
  Grid,
  Guidance,
  accepted_options,
  bind,
  make_sampler,
  nfe,
  plan_grid,
  sample,
)
from jaxdiff.samplers.single_step import DDIM, DDPM, VARIANCES, Euler, EulerAncestral, Heun
from jaxdiff.samplers.stepper import LoopState, Stepper

SPACINGS = grids.SPACINGS
_BUILTIN_ORDER = (
  "ddpm",
  "ddim",
  "dpmpp_2m",
  "euler",
  "euler_ancestral",
  "heun",
  "dpmpp_3m",
  "dpmpp_2m_sde",
  "unipc",
  "lms",
  "dpm_2",
  "dpm_2_ancestral",
  "dpmpp_sde",
  "dpm_adaptive",
)
base._put_first(_BUILTIN_ORDER)

__all__ = [
  "SAMPLERS",
  "INPAINT_SAMPLERS",
  "SPACINGS",
  "VARIANCES",
  "Sampler",
  "static",
  "StepInput",
  "State",
  "Context",
  "Denoised",
  "register",
  "get",
  "available",
  "make_sampler",
  "accepted_options",
  "Stepper",
  "LoopState",
  "Grid",
  "plan_grid",
  "sample",
  "invert",
  "Guidance",
  "bind",
  "nfe",
  "timesteps",
  "ddim_sigma",
  "repaint_schedule",
  "ddim_update",
]


def timesteps(num_timesteps: int, num_steps: int, spacing: str = "leading") -> np.ndarray:
  """The descending int timesteps a sampler visits on a discrete chain (`jaxdiff.grids.spacing`)."""
  return grids.spacing(num_timesteps, num_steps, spacing)


def ddim_sigma(schedule, t, t_prev, eta: float = 1.0) -> jnp.ndarray:
  """DDIM's noise std for the step t -> t_prev: eta sqrt((1-a_prev)/(1-a_t)) sqrt(1 - a_t/a_prev)."""
  proc = as_process(schedule)
  a_t, _ = proc.alpha_sigma(jnp.asarray(np.asarray(t), jnp.int32))
  a_p, _ = proc.alpha_sigma(jnp.asarray(np.asarray(t_prev), jnp.int32))
  a_t, a_p = jnp.square(a_t), jnp.square(a_p)
  return eta * jnp.sqrt((1.0 - a_p) / (1.0 - a_t)) * jnp.sqrt(1.0 - a_t / a_p)
