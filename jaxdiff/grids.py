"""Noise-level grids: the descending times at which a sampler evaluates the model (numpy, static).

A grid has one entry per model evaluation (`num_steps` of them) and no final clean level: every
sampler's last step lands on clean data by itself. Times are in the process's own unit
(`jaxdiff.processes`): discrete timesteps, t in [0, 1], or sigma for EDM.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from jaxdiff.errors import ArgumentError

__all__ = ["SPACINGS", "spacing", "karras", "flow", "uniform", "log_snr", "to_times", "check_grid"]

SPACINGS = ("leading", "trailing", "linspace")
LOG_SNR_LIMIT = 10.0  # log_snr grids stay within |log(alpha/sigma)| <= 10 where a process has no finite end

# jaxdiff.processes (built on these grids) hands over its Schedule -> process conversion here, so
# the grids below accept a Schedule as well as a process without an import cycle.
_as_process = None


def register_process_converter(fn) -> None:
  global _as_process
  _as_process = fn


def _process(p):
  return p if _as_process is None else _as_process(p)


def _numpy(fn, *args):
  """fn(*args) as float64 numpy, evaluated now even while an outer jit traces (grids are static)."""
  with jax.ensure_compile_time_eval():
    out = fn(*args)
  return (
    tuple(np.asarray(o, np.float64) for o in out) if isinstance(out, tuple) else np.asarray(out, np.float64)
  )


def spacing(num_timesteps: int, num_steps: int, kind: str = "leading") -> np.ndarray:
  """The classic descending integer timesteps of a discrete chain, as diffusers defines them.

  leading = arange(n) * (T // n) reversed; trailing = round(arange(T, 0, -T/n)) - 1;
  linspace = round(linspace(T - 1, 0, n)).
  """
  T, n = int(num_timesteps), int(num_steps)
  if n < 1 or n > T:
    raise ArgumentError(f"num_steps must be between 1 and the schedule's T={T}, got {num_steps}.")
  if kind == "leading":
    ts = (np.arange(n) * (T // n)).round()[::-1]
  elif kind == "trailing":
    ts = np.round(np.arange(T, 0, -T / n)) - 1
  elif kind == "linspace":
    ts = np.round(np.linspace(T - 1, 0, n))
  else:
    raise ArgumentError(f"spacing must be one of {SPACINGS}, got {kind!r}.")
  return ts.astype(np.int64)


def karras(n: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> np.ndarray:
  """EDM's grid: sigma_i = (smax^(1/rho) + i/(n-1) (smin^(1/rho) - smax^(1/rho)))^rho, i < n."""
  n = _check_n(n)
  if not 0 < sigma_min < sigma_max:
    raise ArgumentError(f"karras grid needs 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}.")
  ramp = np.linspace(0.0, 1.0, n) if n > 1 else np.zeros(1)
  lo, hi = sigma_min ** (1.0 / rho), sigma_max ** (1.0 / rho)
  return (hi + ramp * (lo - hi)) ** rho


def flow(n: int, shift: float = 1.0, num_train_timesteps: int = 1000) -> np.ndarray:
  """SD3's shifted flow grid, as diffusers' FlowMatchEulerDiscreteScheduler(shift=...) builds it.

  t_i = shift s_i / (1 + (shift - 1) s_i) with s evenly spaced from 1 to the scheduler's
  smallest training sigma (itself the shifted 1/num_train_timesteps, in float32 as diffusers has it).
  """
  n = _check_n(n)
  if not shift > 0:
    raise ArgumentError(f"flow grid shift must be > 0, got {shift}.")
  T = int(num_train_timesteps)
  s1 = np.float32(1.0) / np.float32(T)
  sigma_min = float(np.float32(shift) * s1 / (np.float32(1.0) + np.float32(shift - 1.0) * s1))
  s = np.linspace(1.0 * T, sigma_min * T, n) / T
  return (shift * s / (1.0 + (shift - 1.0) * s)).astype(np.float32).astype(np.float64)


def uniform(process: Any, n: int) -> np.ndarray:
  """n times evenly spaced from the process's t_max down to t_min (or down to, without, a clean t_min)."""
  n = _check_n(n)
  process = _process(process)
  hi, lo = float(process.t_max), float(process.t_min)
  _, sig_lo = _numpy(process.alpha_sigma, np.float32(lo))
  if float(sig_lo) <= 0:  # t_min is clean data: the last step lands there by itself
    return np.linspace(hi, lo, n + 1)[:-1]
  return np.linspace(hi, lo, n)


def log_snr(process: Any, n: int) -> np.ndarray:
  """n times evenly spaced in log-SNR between the process's ends (DPM-Solver's logSNR grid), each end
  kept within |log(alpha/sigma)| <= LOG_SNR_LIMIT where the process reaches zero or infinite SNR."""
  n = _check_n(n)
  process = _process(process)
  ends = np.asarray([process.t_max, process.t_min], np.float64)
  a, s = _numpy(process.alpha_sigma, ends.astype(np.float32))
  with np.errstate(divide="ignore"):
    lam = np.clip(np.log(a) - np.log(s), -LOG_SNR_LIMIT, LOG_SNR_LIMIT)
  ratios = np.exp(-np.linspace(lam[0], lam[1], n))
  return to_times(process, ratios)


def to_times(process: Any, ratios: Any) -> np.ndarray:
  """Noise levels sigma/alpha (e.g. a `karras` grid) as the process's times."""
  ratios = np.asarray(ratios, np.float64)
  return _numpy(_process(process).time_at, ratios.astype(np.float32))


def check_grid(ts: Any, num_steps: int | None) -> np.ndarray:
  """A user grid as float64 numpy: 1-D, finite, strictly descending, of length num_steps."""
  ts = np.asarray(ts, np.float64)
  if ts.ndim != 1 or ts.size < 1:
    raise ArgumentError(f"ts must be a 1-D array of the model's times, got shape {ts.shape}.")
  if num_steps is not None and ts.size != int(num_steps):
    raise ArgumentError(f"ts has {ts.size} times but num_steps={num_steps}; give one time per step.")
  if not np.all(np.isfinite(ts)):
    raise ArgumentError("ts contains NaN or Inf.")
  if ts.size > 1 and not np.all(np.diff(ts) < 0):
    raise ArgumentError("ts must be strictly descending (from noise to data).")
  return ts


def _check_n(n: int) -> int:
  if isinstance(n, bool) or int(n) != n or n < 1:
    raise ArgumentError(f"a grid needs n >= 1 steps, got {n!r}.")
  return int(n)
