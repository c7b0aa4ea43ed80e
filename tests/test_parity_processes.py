"""Diffusers parity of the noise-level core (docs/noise_core.md), to float32 precision.

The same model function on both sides (one formula, written once for jnp and once for torch, fed each
library's own time variable) and the same starting tensor `x_init`, handed to diffusers' loop as is
(`init_noise_sigma` bypassed):

- discrete VP chains (linear / cosine 1000, trailing spacing, eps and v): `dpmpp_3m` / `dpmpp_2m` =
  `DPMSolverMultistepScheduler(solver_order=3|2, algorithm_type="dpmsolver++", lower_order_final=True,
  final_sigmas_type="zero")`; `unipc` (order 2, 3) = `UniPCMultistepScheduler(predict_x0=True, solver_type="bh2")`;
- `processes.EDM` with `prediction="edm"`: `euler` = `EDMEulerScheduler`, `dpmpp_2m` / `dpmpp_3m` =
  `EDMDPMSolverMultistepScheduler` (diffusers' "epsilon" there is EDM's F-parameterisation);
- `processes.RectifiedFlow` with `prediction="flow"`: `euler` = `FlowMatchEulerDiscreteScheduler`, `heun` =
  `FlowMatchHeunDiscreteScheduler` (shift 1 and 3);
- grids: `grids.karras` = diffusers' and k-diffusion's Karras sigmas; `grids.flow` = the FlowMatch sigmas.

Each diffusers harness (model wrapping, time conversion, starting tensor) is checked on its own
(`test_diffusers_harness_*`): with the exact model of Gaussian data it converges, at its method's order, to
the exact answer (the probability-flow ODE solved exactly down to the grid's last level, then the exact
denoiser: every loop here ends with a first-order step to clean data), so a parity failure points at
jaxdiff, not at the harness.

Skipped when torch or diffusers is missing.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

import jaxdiff  # noqa: E402
from jaxdiff import grids, processes, schedules  # noqa: E402

pytestmark = pytest.mark.usefixtures("fast_compiles")

T = 1000
SHAPE = (2, 4, 4, 3)
SIGMA_DATA, SIGMA_MIN, SIGMA_MAX, RHO = 0.5, 0.002, 80.0, 7.0
TORCH_PREDICTION = {"eps": "epsilon", "v": "v_prediction"}


# ---------------------------------------------------------------------------------------------------------
# The toy model: nonlinear in x and in a time feature tau that is O(1) over each process's time range.


def toy(xp, x, tau):
  return xp.sin(1.3 * x + tau) * 0.8 + 0.05 * x


def _col(t, x):
  return t.astype(jnp.float32).reshape((-1,) + (1,) * (x.ndim - 1))


def vp_jax(x, t):
  """Discrete VP chain, v-prediction: t is the timestep in [0, 1000) (int32 on a trailing grid)."""
  return toy(jnp, x, _col(t, x) / 300.0)


def vp_torch(x, t):
  return toy(torch, x, float(t) / 300.0)


def vp_eps_jax(alphas_cumprod, x, t):
  """Discrete VP chain, eps-prediction: the toy read as x0, returned as the eps it implies through the
  chain's own float32 alpha_bar table. (The raw toy read as eps implies x0 = (x - sigma eps) / alpha ~ 1e4
  at the top of cosine(1000), and samples of that size, against which a relative tolerance says little.)
  Bound with `jax.tree_util.Partial`, so the table is an argument and both schedules share a compile."""
  a_bar = _col(alphas_cumprod[t], x)
  return (x - jnp.sqrt(a_bar) * toy(jnp, x, _col(t, x) / 300.0)) / jnp.sqrt(1.0 - a_bar)


def vp_eps_torch(alphas_cumprod):
  def model(x, t):
    a_bar = alphas_cumprod[int(t)]
    return (x - torch.sqrt(a_bar) * toy(torch, x, float(t) / 300.0)) / torch.sqrt(1.0 - a_bar)

  return model


def edm_jax(x_in, sigma):
  """EDM: jaxdiff calls F(c_in x, sigma)."""
  return toy(jnp, x_in, 0.5 * jnp.log(_col(sigma, x_in)))


def edm_torch(x_in, c_noise):
  """diffusers' EDM schedulers call F(c_in x, c_noise) with c_noise = log(sigma) / 4."""
  return toy(torch, x_in, 0.5 * torch.log(torch.exp(4.0 * c_noise)))


def flow_jax(x, t):
  """Rectified flow: t in [0, 1]; returns the velocity eps - x0."""
  return toy(jnp, x, 3.0 * _col(t, x))


def flow_torch(x, timestep):
  """diffusers' FlowMatch schedulers call v(x, 1000 t)."""
  return toy(torch, x, 3.0 * (timestep / 1000.0))


# ---------------------------------------------------------------------------------------------------------
# The exact model of Gaussian data x0 ~ N(MU, S^2) (per element), for the harness checks.

MU, S = 0.3, 0.7


def gaussian_x0(x, alpha, sigma):
  return MU + alpha * S**2 / (alpha**2 * S**2 + sigma**2) * (x - alpha * MU)


def exact_target(x_init, first, last):
  """Where a sampler whose last step denoises to clean data converges: the probability-flow ODE from the
  first grid level to the last (it maps (x - alpha mu) / sqrt(alpha^2 s^2 + sigma^2) to itself), then the
  exact denoiser there. `first`, `last`: (alpha, sigma) of the first and last grid levels."""
  (a0, s0), (a1, s1) = first, last
  z = (np.asarray(x_init, np.float64) - a0 * MU) / math.sqrt(a0**2 * S**2 + s0**2)
  return gaussian_x0(a1 * MU + math.sqrt(a1**2 * S**2 + s1**2) * z, a1, s1)


def exact_vp_torch(alphas_cumprod, prediction):
  def model(x, t):
    alpha = math.sqrt(float(alphas_cumprod[int(t)]))
    sigma = math.sqrt(1.0 - alpha**2)
    x0 = gaussian_x0(x, alpha, sigma)
    eps = (x - alpha * x0) / sigma
    return eps if prediction == "eps" else alpha * eps - sigma * x0

  return model


def exact_edm_torch(x_in, c_noise):
  sigma = math.exp(4.0 * float(c_noise))
  x = x_in * math.sqrt(sigma**2 + SIGMA_DATA**2)
  c_skip = SIGMA_DATA**2 / (sigma**2 + SIGMA_DATA**2)
  c_out = sigma * SIGMA_DATA / math.sqrt(sigma**2 + SIGMA_DATA**2)
  return (gaussian_x0(x, 1.0, sigma) - c_skip * x) / c_out


def exact_flow_torch(x, timestep):
  t = float(timestep) / 1000.0
  x0 = gaussian_x0(x, 1.0 - t, t)
  return (x - (1.0 - t) * x0) / t - x0  # eps - x0


# ---------------------------------------------------------------------------------------------------------
# diffusers side


def _schedule(name):
  return {"linear": schedules.linear, "cosine": schedules.cosine}[name](T)


def vp_scheduler(cls, sched, prediction="eps", **kw):
  scheduler = cls(
    num_train_timesteps=T,
    trained_betas=np.asarray(sched.betas, np.float64),
    timestep_spacing="trailing",
    final_sigmas_type="zero",
    prediction_type=TORCH_PREDICTION[prediction],
    **kw,
  )
  scheduler.alphas_cumprod = torch.from_numpy(np.array(sched.alphas_cumprod))  # the same float32 values
  return scheduler


def dpm_scheduler(sched, order, prediction="eps"):
  return vp_scheduler(
    diffusers.DPMSolverMultistepScheduler,
    sched,
    prediction,
    solver_order=order,
    algorithm_type="dpmsolver++",
    lower_order_final=True,
  )


def unipc_scheduler(sched, order, prediction="eps"):
  scheduler = vp_scheduler(
    diffusers.UniPCMultistepScheduler,
    sched,
    prediction,
    solver_order=order,
    predict_x0=True,
    solver_type="bh2",
  )
  # the defaults the pair relies on: the corrector after every step, order 1 on the last step
  assert scheduler.config.disable_corrector == [] and scheduler.config.lower_order_final is True
  return scheduler


def edm_scheduler(sampler):
  common = dict(sigma_min=SIGMA_MIN, sigma_max=SIGMA_MAX, sigma_data=SIGMA_DATA, rho=RHO)
  if sampler == "euler":
    return diffusers.EDMEulerScheduler(**common, prediction_type="epsilon")
  order = {"dpmpp_2m": 2, "dpmpp_3m": 3}[sampler]
  return diffusers.EDMDPMSolverMultistepScheduler(
    **common, solver_order=order, algorithm_type="dpmsolver++", final_sigmas_type="zero"
  )


def flow_scheduler(sampler, shift):
  cls = {"euler": diffusers.FlowMatchEulerDiscreteScheduler, "heun": diffusers.FlowMatchHeunDiscreteScheduler}
  return cls[sampler](num_train_timesteps=T, shift=shift)


def run_diffusers(scheduler, model, x_init, n):
  """diffusers' sampling loop from `x_init` as given (no `init_noise_sigma`)."""
  scheduler.set_timesteps(n)
  x = torch.from_numpy(np.array(x_init, np.float32))
  scale = getattr(scheduler, "scale_model_input", None)
  for t in scheduler.timesteps:
    out = model(scale(x, t) if scale else x, t)
    x = scheduler.step(out, t, x).prev_sample
  return x.numpy()


def grid(scheduler, n):
  """The n model-evaluation levels of a diffusers scheduler (its sigmas without the final 0)."""
  scheduler.set_timesteps(n)
  sigmas = scheduler.sigmas.numpy()
  if isinstance(scheduler, diffusers.FlowMatchHeunDiscreteScheduler):
    sigmas = np.append(sigmas[:-1:2], sigmas[-1])  # [s0, s1, s1, ..., s_{n-1}, s_{n-1}, 0]
  assert sigmas[-1] == 0 and len(sigmas) == n + 1
  return sigmas[:-1]


def noise(seed=0):
  return np.asarray(jax.random.normal(jax.random.key(seed), SHAPE))


def assert_close(got, want, atol=2e-5):
  """Float32 agreement on the sample's scale, max(1, max |want|) (every sample here is O(1))."""
  got = np.asarray(got)
  assert got.shape == want.shape and np.isfinite(got).all()
  scale = max(1.0, float(np.abs(want).max()))
  np.testing.assert_allclose(got / scale, want / scale, rtol=0, atol=atol)


# ---------------------------------------------------------------------------------------------------------
# The diffusers harnesses on their own: with the exact Gaussian model each loop converges to `exact_target`
# (a wrong time conversion, input scaling or start would leave an O(1) error that more steps do not cut).


def _harness_error(kind, name, n, x_init):
  if kind.startswith(("dpmpp", "unipc")):
    sched = _schedule(name)
    prediction = "v" if kind.endswith("_v") else "eps"
    order = int(kind.split("_")[1][0])
    scheduler = (unipc_scheduler if kind.startswith("unipc") else dpm_scheduler)(sched, order, prediction)
    ac = np.asarray(sched.alphas_cumprod, np.float64)
    model = exact_vp_torch(ac, prediction)
    scheduler.set_timesteps(n)
    t0, t1 = int(scheduler.timesteps[0]), int(scheduler.timesteps[-1])
    levels = [(math.sqrt(ac[t]), math.sqrt(1 - ac[t])) for t in (t0, t1)]
  elif kind.startswith("edm_"):
    scheduler, model = edm_scheduler(kind[4:]), exact_edm_torch
    sigmas = grid(scheduler, n).astype(np.float64)
    x_init = sigmas[0] * x_init
    levels = [(1.0, sigmas[0]), (1.0, sigmas[-1])]
  else:
    scheduler, model = flow_scheduler(kind[5:], float(name)), exact_flow_torch
    ts = grid(scheduler, n).astype(np.float64)
    assert ts[0] == 1.0
    levels = [(1 - ts[0], ts[0]), (1 - ts[-1], ts[-1])]
  want = exact_target(x_init, *levels)
  got = run_diffusers(scheduler, model, x_init, n)
  return float(np.abs(got - want).max())


HARNESS = [
  # (kind, schedule or shift, bound on |x - exact| after 100 steps: about twice the observed error)
  ("dpmpp_3m", "linear", 2e-3),
  ("dpmpp_3m_v", "cosine", 2e-3),
  ("dpmpp_2m_v", "linear", 1.5e-2),
  ("unipc_2", "cosine", 2e-3),
  ("unipc_3", "linear", 3e-3),
  ("edm_euler", None, 0.12),
  ("edm_dpmpp_2m", None, 6e-3),
  ("edm_dpmpp_3m", None, 1.5e-3),
  ("flow_euler", "1.0", 6e-2),
  ("flow_heun", "3.0", 6e-4),
]


@pytest.mark.parametrize("kind,name,bound", HARNESS)
def test_diffusers_harness_reaches_exact_endpoint(kind, name, bound):
  """Also converges: 5x the steps cuts the error at least 3x (the methods are of order 1 to 3)."""
  x_init = noise(5)
  errors = [_harness_error(kind, name, n, x_init) for n in (20, 100)]
  assert errors[1] < bound and errors[1] < errors[0] / 3, errors


# ---------------------------------------------------------------------------------------------------------
# Grids


def k_diffusion_karras(n, sigma_min, sigma_max, rho=7.0):
  """k_diffusion.sampling.get_sigmas_karras without its appended 0 (torch float32, as k-diffusion)."""
  ramp = torch.linspace(0, 1, n)
  min_inv_rho, max_inv_rho = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
  return ((max_inv_rho + ramp * (min_inv_rho - max_inv_rho)) ** rho).numpy()


@pytest.mark.parametrize(
  "n,sigma_min,sigma_max,rho",
  [
    (1, 0.002, 80.0, 7.0),
    (8, 0.002, 80.0, 7.0),
    (20, 0.002, 80.0, 7.0),
    (30, 0.0292, 14.6146, 7.0),
    (12, 0.1, 10.0, 3.0),
  ],
)
def test_karras_grid_matches_diffusers_and_k_diffusion(n, sigma_min, sigma_max, rho):
  got = np.asarray(grids.karras(n, sigma_min, sigma_max, rho))
  assert got.shape == (n,)
  i = np.arange(n) / max(n - 1, 1)  # the formula in float64
  exact = (sigma_max ** (1 / rho) + i * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho
  np.testing.assert_allclose(got, exact, rtol=1e-6)
  kw = dict(sigma_min=sigma_min, sigma_max=sigma_max, rho=rho)
  np.testing.assert_allclose(got, grid(diffusers.EDMEulerScheduler(**kw), n), rtol=1e-6)
  # EDMDPMSolverMultistepScheduler and k-diffusion ramp and raise to rho in float32: a few ulp apart
  np.testing.assert_allclose(got, grid(diffusers.EDMDPMSolverMultistepScheduler(**kw), n), rtol=2e-6)
  np.testing.assert_allclose(got, k_diffusion_karras(n, sigma_min, sigma_max, rho), rtol=2e-6)
  edm = processes.EDM(sigma_data=SIGMA_DATA, **kw)
  np.testing.assert_allclose(edm.default_grid(n), grid(diffusers.EDMEulerScheduler(**kw), n), rtol=1e-6)


@pytest.mark.parametrize("shift", [1.0, 3.0, 7.5])
def test_flow_grid_matches_flow_match_schedulers(shift):
  for n in (1, 4, 10, 28, 50):
    want = grid(flow_scheduler("euler", shift), n)
    np.testing.assert_array_equal(grid(flow_scheduler("heun", shift), n), want)
    assert want[0] == 1.0
    np.testing.assert_allclose(grids.flow(n, shift), want, rtol=1e-6, atol=0)
    np.testing.assert_allclose(processes.RectifiedFlow(shift=shift).default_grid(n), want, rtol=1e-6, atol=0)


# ---------------------------------------------------------------------------------------------------------
# Discrete VP chains: DPM-Solver++(2M/3M) and UniPC (trailing spacing, integer timesteps on both sides)


def vp_models(sched, prediction):
  """(jax model, torch model) of the parity tests on a discrete chain."""
  if prediction == "v":
    return vp_jax, vp_torch
  table = np.array(sched.alphas_cumprod)
  return jax.tree_util.Partial(vp_eps_jax, jnp.asarray(table)), vp_eps_torch(torch.from_numpy(table))


def _vp_parity(scheduler, sched, sampler, n, prediction, **options):
  x_init = noise()
  jax_model, torch_model = vp_models(sched, prediction)
  want = run_diffusers(scheduler, torch_model, x_init, n)
  got = jaxdiff.sample(
    jax_model,
    sched,
    SHAPE,
    jax.random.key(1),
    sampler=sampler,
    num_steps=n,
    spacing="trailing",
    x_init=jnp.asarray(x_init),
    prediction=prediction,
    **options,
  )
  np.testing.assert_array_equal(grids.spacing(T, n, "trailing"), scheduler.timesteps.numpy())
  assert_close(got, want)


@pytest.mark.parametrize("prediction", ["eps", "v"])
# below 15 steps diffusers also lowers the second-to-last step to order 2
@pytest.mark.parametrize("n", [8, 20])
@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_dpmpp_3m_matches_diffusers(name, n, prediction):
  sched = _schedule(name)
  _vp_parity(dpm_scheduler(sched, 3, prediction), sched, "dpmpp_3m", n, prediction)


@pytest.mark.parametrize("prediction", ["eps", "v"])
@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_dpmpp_2m_few_steps_and_v_match_diffusers(name, prediction):
  """tests/test_diffusers_parity.py covers eps at 20 and 25 steps; here 8 steps and v-prediction."""
  sched = _schedule(name)
  _vp_parity(dpm_scheduler(sched, 2, prediction), sched, "dpmpp_2m", 8, prediction)


@pytest.mark.parametrize(
  "order,n,prediction",
  [(2, 8, "eps"), (2, 20, "eps"), (3, 8, "eps"), (3, 20, "eps"), (3, 8, "v")],
)
@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_unipc_matches_diffusers(name, order, n, prediction):
  sched = _schedule(name)
  _vp_parity(unipc_scheduler(sched, order, prediction), sched, "unipc", n, prediction, order=order)


# ---------------------------------------------------------------------------------------------------------
# EDM: prediction="edm" (F with EDM's preconditioning) against diffusers' EDM schedulers


def _edm():
  return processes.EDM(sigma_data=SIGMA_DATA, sigma_min=SIGMA_MIN, sigma_max=SIGMA_MAX)


@pytest.mark.parametrize("n", [8, 20])
@pytest.mark.parametrize("sampler", ["euler", "dpmpp_2m", "dpmpp_3m"])
def test_edm_samplers_match_diffusers(sampler, n):
  scheduler = edm_scheduler(sampler)
  sigmas = grid(scheduler, n)
  x_init = float(sigmas[0]) * noise()  # sigma_0 z, as given to both loops
  want = run_diffusers(scheduler, edm_torch, x_init, n)
  got = jaxdiff.sample(
    edm_jax, _edm(), SHAPE, jax.random.key(1), sampler=sampler, num_steps=n, prediction="edm", x_init=x_init
  )
  assert_close(got, want)


@pytest.mark.parametrize("sampler,n", [("euler", 20), ("dpmpp_3m", 8)])
def test_edm_explicit_karras_grid_matches_diffusers(sampler, n):
  scheduler = edm_scheduler(sampler)
  ts = grids.karras(n, SIGMA_MIN, SIGMA_MAX, RHO)
  np.testing.assert_allclose(ts, grid(scheduler, n), rtol=2e-6)
  x_init = float(ts[0]) * noise()
  want = run_diffusers(scheduler, edm_torch, x_init, n)
  got = jaxdiff.sample(
    edm_jax,
    _edm(),
    SHAPE,
    jax.random.key(1),
    sampler=sampler,
    num_steps=n,
    ts=ts,
    prediction="edm",
    x_init=x_init,
  )
  assert_close(got, want)


# ---------------------------------------------------------------------------------------------------------
# Rectified flow: prediction="flow" (velocity eps - x0) against diffusers' FlowMatch schedulers


@pytest.mark.parametrize("shift", [1.0, 3.0])
@pytest.mark.parametrize("sampler", ["euler", "heun"])
def test_flow_samplers_match_diffusers(sampler, shift):
  n = 10
  x_init = noise()  # z at t = 1, the first level of every shifted grid
  want = run_diffusers(flow_scheduler(sampler, shift), flow_torch, x_init, n)
  got = jaxdiff.sample(
    flow_jax,
    processes.RectifiedFlow(shift=shift),
    SHAPE,
    jax.random.key(1),
    sampler=sampler,
    num_steps=n,
    prediction="flow",
    x_init=x_init,
  )
  assert_close(got, want)


@pytest.mark.parametrize("sampler", ["euler", "heun"])
def test_flow_explicit_grid_matches_diffusers(sampler):
  n, shift = 12, 3.0
  scheduler = flow_scheduler(sampler, shift)
  ts = grids.flow(n, shift=shift)
  np.testing.assert_allclose(ts, grid(scheduler, n), rtol=1e-6)
  x_init = noise()
  want = run_diffusers(scheduler, flow_torch, x_init, n)
  got = jaxdiff.sample(
    flow_jax,
    processes.RectifiedFlow(),
    SHAPE,
    jax.random.key(1),
    sampler=sampler,
    num_steps=n,
    ts=ts,
    prediction="flow",
    x_init=x_init,
  )
  assert_close(got, want)
