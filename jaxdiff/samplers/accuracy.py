"""How close each deterministic sampler lands to the exact probability-flow end point, per process.

The data are an 8-Gaussian ring (std 0.1 around the unit circle) whose denoiser is exact
(`jaxdiff.gaussian.mixture_posterior`); every run starts from the same noise at the first time of
the process's default grid and computes in float64. The reference is Heun with 1000 steps from that
time down to the grid's last time, then the same final step to clean data every sampler takes.
`python -m jaxdiff.samplers.accuracy` prints the README's table (tests/test_samplers.py checks it);
`--gap_ratio=R` prints it with the multistep solvers' order rule at ratio R, and `--local=flow:15`
the error of single steps from the exact state, first order against dpmpp_2m's second order.
"""

from __future__ import annotations

import argparse
import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxdiff import gaussian, processes, schedules
from jaxdiff.samplers.base import get
from jaxdiff.samplers.scan import sample

__all__ = ["PROCESSES", "SAMPLERS", "STEPS", "MULTISTEP", "errors", "table", "exact_states", "local_errors"]

PROCESSES = {
  "DDPM chain": lambda: processes.DiscreteVP(schedules.linear(1000)),
  "VP-SDE": processes.VPSDE,
  "cosine VP": processes.CosineVP,
  "EDM": processes.EDM,
  "flow": processes.RectifiedFlow,
}
SAMPLERS = ("euler", "heun", "lms", "dpmpp_2m", "dpmpp_3m", "unipc")
STEPS = (10, 20, 40)
MULTISTEP = ("dpmpp_2m", "dpmpp_3m", "unipc")  # the samplers that take gap_ratio
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


def errors(name: str, sampler: str, steps=STEPS, **options) -> np.ndarray:
  """RMS distance to the reference end point after `steps` steps of `sampler` (with `options`)
  on process `name`."""
  return np.asarray(_errors(name, sampler, tuple(steps), tuple(sorted(options.items()))))


@functools.cache
def _errors(name: str, sampler: str, steps: tuple[int, ...], options: tuple = ()) -> tuple[float, ...]:
  with jax.enable_x64(True):
    proc = PROCESSES[name]()
    out = []
    for n in steps:
      x = sample(_model(proc), proc, (_BATCH, 2), jax.random.key(1), sampler=sampler, num_steps=n,
                 prediction="x0", x_init=_start(proc, proc.default_grid(n)), **dict(options))  # fmt: skip
      out.append(float(np.sqrt(np.mean((np.asarray(x) - _reference(name, n)) ** 2))))
  return tuple(out)


def _cell(errs: np.ndarray, euler: np.ndarray) -> str:
  marks = ["" if e <= 1.1 * u else "!" for e, u in zip(errs, euler)]
  return " / ".join(f"{e:.2g}{m}" for e, m in zip(errs, marks))


def table(gap_ratio: float | None = None) -> str:
  """The README's markdown table: RMS error at 10 / 20 / 40 steps per sampler and process ('!':
  more than 1.1x Euler's error at that step count); `gap_ratio` is given to the multistep rows."""
  rows = ["| sampler | NFE | " + " | ".join(PROCESSES) + " |", "|---" * (len(PROCESSES) + 2) + "|"]
  euler = {p: errors(p, "euler") for p in PROCESSES}
  for s in SAMPLERS:
    kw = {"gap_ratio": gap_ratio} if gap_ratio is not None and s in MULTISTEP else {}
    cells = [_cell(euler[p] if s == "euler" else errors(p, s, **kw), euler[p]) for p in PROCESSES]
    nfe = " / ".join(str(get(s)().nfe(n)) for n in STEPS)
    rows.append(f"| {s} | {nfe} | " + " | ".join(cells) + " |")
  return "\n".join(rows)


def exact_states(name: str, n: int) -> tuple[np.ndarray, np.ndarray]:
  """(grid, states): the default n-step grid of process `name` and the exact states at its levels
  (a Heun run with 100 steps per grid interval), float64."""
  with jax.enable_x64(True):
    proc = PROCESSES[name]()
    grid = np.asarray(proc.default_grid(n), np.float64)
    fine = [np.geomspace(a + 1.0, b + 1.0, 101)[:-1] - 1.0 for a, b in zip(grid[:-1], grid[1:])]
    fine = np.append(np.concatenate(fine), grid[-1])
    _, traj = sample(_model(proc), proc, (_BATCH, 2), jax.random.key(1), sampler="heun", ts=fine,
                     prediction="x0", x_init=_start(proc, grid), return_trajectory=True)  # fmt: skip
    return grid, np.asarray(traj["x"])[::100]


def local_errors(name: str, n: int) -> list[dict]:
  """One step at a time from the exact state (`exact_states`) on the default n-step grid: the RMS
  error (over alpha) of the first-order step (Euler / DDIM) and of dpmpp_2m's second-order step,
  whose history is the exact state's x0 prediction one level back. Where the second order is
  worse, extrapolating the x0 prediction overshoots."""
  grid, exact = exact_states(name, n)
  with jax.enable_x64(True):
    proc = PROCESSES[name]()
    alpha, sigma = (np.asarray(v, np.float64) for v in proc.alpha_sigma(jnp.asarray(grid)))
    with np.errstate(divide="ignore"):
      lam = np.log(alpha / sigma)  # -inf at a pure-noise first level
    x0 = [np.asarray(_model(proc)(jnp.asarray(exact[i]), jnp.full((_BATCH,), grid[i]))) for i in range(n)]
  rows = []
  for i in range(1, n - 1):
    if not np.isfinite(lam[i - 1]):
      continue  # no gap before it to compare with
    h, h_before = lam[i + 1] - lam[i], lam[i] - lam[i - 1]
    first = (sigma[i + 1] / sigma[i]) * exact[i] + alpha[i + 1] * -np.expm1(-h) * x0[i]
    second = first + 0.5 * alpha[i + 1] * -np.expm1(-h) * (x0[i] - x0[i - 1]) * h / h_before
    err = [float(np.sqrt(np.mean((y - exact[i + 1]) ** 2)) / alpha[i + 1]) for y in (first, second)]
    rows.append({"step": i, "t": float(grid[i]), "gap": float(h), "gap_ratio": float(h / h_before),
                 "first": err[0], "second": err[1]})  # fmt: skip
  return rows


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(
    prog="python -m jaxdiff.samplers.accuracy", description=__doc__.split("\n")[0]
  )
  parser.add_argument("--gap_ratio", type=float, default=None, help="the multistep solvers' order rule")
  parser.add_argument("--local", default=None, metavar="PROCESS:N", help="single-step errors, e.g. flow:15")
  args = parser.parse_args(argv)
  if args.local:
    name, n = args.local.rsplit(":", 1)
    print(
      "| step | t | log-SNR gap | gap / previous | first order | second order |\n|---|---|---|---|---|---|"
    )
    for r in local_errors(name, int(n)):
      print(
        f"| {r['step']} | {r['t']:.4g} | {r['gap']:.2f} | {r['gap_ratio']:.2f} | {r['first']:.2g} | {r['second']:.2g} |"
      )
    return
  print(table(args.gap_ratio))


if __name__ == "__main__":
  main()
