"""How close each deterministic sampler lands to the exact probability-flow end point, per process.

The data are an 8-Gaussian ring (std 0.1 around the unit circle) whose denoiser is exact
(`jaxdiff.gaussian.mixture_posterior`); every run starts from the same noise at the first time of
the process's default grid and computes in float64. The reference is Heun with 1000 steps from that
time down to the grid's last time, then the same final step to clean data every sampler takes.
`python -m jaxdiff.samplers.accuracy` prints the README's table (tests/test_samplers.py checks it).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxdiff import gaussian, processes, schedules
from jaxdiff.samplers.base import get
from jaxdiff.samplers.sampling import sample

__all__ = ["PROCESSES", "SAMPLERS", "STEPS", "errors", "table"]

PROCESSES = {
  "DDPM chain": lambda: processes.DiscreteVP(schedules.linear(1000)),
  "VP-SDE": processes.VPSDE,
  "cosine VP": processes.CosineVP,
  "EDM": processes.EDM,
  "flow": processes.RectifiedFlow,
}
SAMPLERS = ("euler", "heun", "lms", "dpmpp_2m", "dpmpp_3m", "unipc")
STEPS = (10, 20, 40)
_ANGLES = np.arange(8) * 2.0 * np.pi / 8
_MEANS = np.stack([np.cos(_ANGLES), np.sin(_ANGLES)], 1)
_BATCH = 128


def _model(proc):
  def fn(x, t):
    a, s = proc.alpha_sigma(t)
    return gaussian.mixture_posterior(x, a[:, None], s[:, None], np.full(8, 0.125), _MEANS, np.full(8, 0.1))[
      0
    ]

  return fn


def _start(proc, grid) -> jnp.ndarray:
  z = jax.random.normal(jax.random.key(0), (_BATCH, 2), jnp.float64)
  return proc.prior_std(jnp.float64(grid[0])) * z


@functools.cache
def _reference(name: str, n: int) -> np.ndarray:
  proc = PROCESSES[name]()
  grid = proc.default_grid(n)
  fine = np.geomspace(grid[0] + 1.0, grid[-1] + 1.0, 1000) - 1.0  # denser at the clean end
  fine[0], fine[-1] = grid[0], grid[-1]
  out = sample(_model(proc), proc, (_BATCH, 2), jax.random.key(1), sampler="heun", ts=fine, prediction="x0",
               x_init=_start(proc, grid))  # fmt: skip
  return np.asarray(out)


def errors(name: str, sampler: str, steps=STEPS) -> np.ndarray:
  """RMS distance to the reference end point after `steps` steps of `sampler` on process `name`."""
  return np.asarray(_errors(name, sampler, tuple(steps)))


@functools.cache
def _errors(name: str, sampler: str, steps: tuple[int, ...]) -> tuple[float, ...]:
  with jax.enable_x64(True):
    proc = PROCESSES[name]()
    out = []
    for n in steps:
      x = sample(_model(proc), proc, (_BATCH, 2), jax.random.key(1), sampler=sampler, num_steps=n,
                 prediction="x0", x_init=_start(proc, proc.default_grid(n)))  # fmt: skip
      out.append(float(np.sqrt(np.mean((np.asarray(x) - _reference(name, n)) ** 2))))
  return tuple(out)


def _cell(errs: np.ndarray, euler: np.ndarray) -> str:
  marks = ["" if e <= 1.1 * u else "!" for e, u in zip(errs, euler)]
  return " / ".join(f"{e:.2g}{m}" for e, m in zip(errs, marks))


def table() -> str:
  """The README's markdown table: RMS error at 10 / 20 / 40 steps per sampler and process ('!':
  more than 1.1x Euler's error at that step count)."""
  rows = ["| sampler | NFE | " + " | ".join(PROCESSES) + " |", "|---" * (len(PROCESSES) + 2) + "|"]
  euler = {p: errors(p, "euler") for p in PROCESSES}
  for s in SAMPLERS:
    cells = [_cell(euler[p] if s == "euler" else errors(p, s), euler[p]) for p in PROCESSES]
    nfe = " / ".join(str(get(s)().nfe(n)) for n in STEPS)
    rows.append(f"| {s} | {nfe} | " + " | ".join(cells) + " |")
  return "\n".join(rows)


if __name__ == "__main__":
  print(table())
