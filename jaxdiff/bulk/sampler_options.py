"""The sampler, grid and guidance-interval choices of a bulk run, checked against the model's process:
each is applied or refused with a message, never silently dropped. A sampler option the sampler does
not take, a grid flag the grid in use does not take, a chain spacing on a continuous process, a grid
that leaves the noise range the model was trained for and a guidance interval that holds none of the
run's steps are refused; --rho / --sigma_min / --sigma_max on an EDM model and --shift on a flow model
name the model's own grid.
"""

from __future__ import annotations

import math
from typing import Any

import ml_collections
import numpy as np

from jaxdiff import samplers
from jaxdiff.bulk.request import GRID_FLAGS
from jaxdiff.config_sampling import GRID_OPTIONS, sampling_grid
from jaxdiff.config_utils import GRIDS, process_from_config
from jaxdiff.errors import SamplingError
from jaxdiff.processes import as_process

__all__ = [
  "chain_spacing",
  "check_sampler_options",
  "grid_options",
  "plan_times",
  "grid_times",
  "check_interval",
]


def chain_spacing(config, spacing: str | None) -> str:
  """The chain spacing in use: --spacing over config.sample.spacing; refused on continuous processes,
  whose grid is --grid (a spacing there would be ignored)."""
  process = config.diffusion.process
  if spacing is not None and process != "vp":
    raise SamplingError(
      f"--spacing={spacing} applies to discrete (vp) chains; this model's process is {process!r}, "
      "whose grid is chosen with --grid (karras, logsnr, uniform or flow): leave --spacing out."
    )
  spacing = config.sample.spacing if spacing is None else str(spacing)
  if spacing not in samplers.SPACINGS:
    raise SamplingError(f"Unknown spacing {spacing!r}; choose one of {', '.join(samplers.SPACINGS)}.")
  return spacing


def check_sampler_options(sampler: str, **given: Any) -> None:
  """Refuse a sampler option the chosen sampler does not take (None: not given), as `jaxdiff.sample` does."""
  takes = samplers.get(sampler).options
  for name, value in given.items():
    if value is not None and name not in takes:
      users = [n for n in samplers.SAMPLERS if name in samplers.get(n).options]
      raise SamplingError(
        f"--{name}={value}: the {sampler} sampler does not take {name} (its options: "
        f"{', '.join(sorted(takes)) or 'none'}). Leave --{name} out, or choose a sampler that takes "
        f"it ({', '.join(users)})."
      )


# the grid flags each grid takes; a grid of "" is the process's own: karras on edm, flow on flow
_GRID_TAKES = {"karras": ("rho", "sigma_min", "sigma_max"), "flow": ("shift",)}
_OWN_GRID = {"edm": "karras", "flow": "flow"}


def grid_options(config, given: dict | None) -> dict | None:
  """The grid / sampler-option flags that were given, checked (None when none was). A flag of the
  process's own grid (--rho, --sigma_min, --sigma_max on edm; --shift on flow) names that grid, so
  it applies without --grid; a flag the grid in use does not take is refused."""
  given = {k: v for k, v in (given or {}).items() if v is not None}
  unknown = sorted(set(given) - set(GRID_FLAGS))
  if unknown:
    raise SamplingError(f"unknown grid option(s) {unknown}; choose from {GRID_FLAGS}.")
  process = config.diffusion.process
  if "grid" in given and given["grid"] not in GRIDS:
    raise SamplingError(f"--grid={given['grid']!r}: choose one of {GRIDS} ('': the process's own).")
  if process != "vp" and given.get("grid") in samplers.SPACINGS:
    raise SamplingError(
      f"--grid={given['grid']} is a spacing of discrete chains; this run's process is "
      f"{process!r}: use karras, logsnr, uniform or flow."
    )
  if "order" in given and given["order"] not in (1, 2, 3):
    raise SamplingError(f"--order={given['order']}: unipc's order is 1, 2 or 3.")
  if "s_churn" in given and not (math.isfinite(given["s_churn"]) and given["s_churn"] >= 0):
    raise SamplingError(f"--s_churn={given['s_churn']} must be a finite number >= 0.")
  for k in ("rho", "sigma_min", "sigma_max", "shift"):
    if k in given and not (math.isfinite(given[k]) and given[k] > 0):
      raise SamplingError(f"--{k}={given[k]} must be a finite number > 0.")
  kind = given.get("grid", config.sample.grid)
  own = kind == ""
  if own:
    kind = _OWN_GRID.get(process, "")
  takes = _GRID_TAKES.get(kind, ())
  stray = [k for k in ("rho", "sigma_min", "sigma_max", "shift") if k in given and k not in takes]
  if stray:
    where = f"--grid={kind}" if not own else f"the own grid of this {process!r} model"
    raise SamplingError(
      f"--{stray[0]} is a setting of --grid=karras (rho, sigma_min, sigma_max) or --grid=flow (shift); "
      f"{where} does not take it. Leave --{stray[0]} out, or give the grid it belongs to."
    )
  if own and any(k in given for k in takes):  # the process's own grid with the flags' values
    given["grid"] = kind
    if kind == "karras":
      d = config.diffusion
      for k in ("rho", "sigma_min", "sigma_max"):
        given.setdefault(k, float(d[k]))
  return given or None


_TIME_UNIT = {"vp": "timesteps", "edm": "sigma"}


def plan_times(config, proc, sampler: str, num_steps: int, spacing: str, grid: dict | None, eta: float):
  """The model times of the run's steps (noisiest first), as the sampler will plan them; refuses a
  grid that leaves the noise range the model was trained on (its network never saw those levels)."""
  grid = grid or {}
  try:
    where = sampling_grid(config, proc, num_steps, spacing=spacing, **{k: grid.get(k) for k in GRID_OPTIONS})
    smp = samplers.make_sampler(
      sampler, **samplers.accepted_options(sampler, eta=eta, order=grid.get("order"))
    )
    ts = np.asarray(samplers.plan_grid(proc, smp, num_steps, **where).ts, np.float64)
  except ValueError as e:
    raise SamplingError(f"--grid: {e}") from None
  lo, hi = float(proc.t_min), float(proc.t_max)
  tol = 1e-4
  if ts.max() > hi * (1 + tol) + 1e-7 or ts.min() < lo * (1 - tol) - 1e-7:
    process = config.diffusion.process
    unit = _TIME_UNIT.get(process, "t")
    name = f"--grid={grid['grid']}" if grid.get("grid") else "the sampling grid"
    raise SamplingError(
      f"{name} reaches {unit} {ts.max():.6g} .. {ts.min():.6g}, outside the range this {process!r} model "
      f"was trained for, {unit} in [{lo:g}, {hi:g}]: its network never saw those noise levels. Use the "
      "process's own grid (leave --grid out) or keep the grid's ends inside that range (--sigma_min, "
      "--sigma_max)."
    )
  return ts


def grid_times(config: ml_collections.ConfigDict, settings: Any) -> np.ndarray:
  """The model times of a run's steps, noisiest first, as its sampler plans them (what the
  trajectory's columns are labelled with, and where a guidance interval is checked)."""
  proc = as_process(process_from_config(config))
  return plan_times(
    config, proc, settings.sampler, settings.num_steps, settings.spacing, settings.grid, settings.eta
  )


def check_interval(interval, proc, process: str, ts: np.ndarray) -> None:
  """Refuse a guidance interval that holds none of the run's steps: guidance would silently be off."""
  lo, hi = interval
  unit = _TIME_UNIT.get(process, "t")
  t_lo, t_hi = float(proc.t_min), float(proc.t_max)
  if hi < t_lo or lo > t_hi:
    raise SamplingError(
      f"--guidance_interval={lo:g},{hi:g} lies outside this {process!r} model's time range, {unit} in "
      f"[{t_lo:g}, {t_hi:g}]: guidance would be off at every step. Give 'lo,hi' inside that range."
    )
  if not np.any((ts >= lo) & (ts <= hi)):
    raise SamplingError(
      f"--guidance_interval={lo:g},{hi:g} holds none of the run's {len(ts)} step times ({unit} "
      f"{ts[0]:.6g} .. {ts[-1]:.6g}): guidance would be off at every step. Widen the interval or take "
      "more steps."
    )
