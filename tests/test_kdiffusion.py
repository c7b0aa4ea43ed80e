"""jaxdiff's samplers against k-diffusion's own functions (Crowson's reference implementation).

Both sides run in float64 on EDM's Karras grid with the exact denoiser of a Gaussian mixture (or a
fixed preconditioned network), from the same x; stochastic samplers get jaxdiff's noise through
k-diffusion's noise_sampler (or torch.randn_like for the churn). k-diffusion is installed without its
heavy dependencies (`pip install --no-deps k-diffusion==0.1.1.post1 torchsde torchdiffeq trampoline`),
so only its sampling module is loaded; a missing install is an error here, never a skip.
"""

import importlib.util
import sys
import types
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxdiff
from jaxdiff import gaussian, grids, processes
from jaxdiff.samplers.base import NOISE_STREAM_CHURN
from jaxdiff.samplers.kdiffusion import NOISE_STREAM_SDE_MID

try:
  import torch
except ImportError as e:  # fail loudly: the cross-check is part of the default suite
  raise ImportError("tests/test_kdiffusion.py needs torch (the dev extra's CPU build).") from e


def _load_kdiffusion_sampling():
  spec = importlib.util.find_spec("k_diffusion")
  if spec is None or not spec.submodule_search_locations:
    raise ImportError(
      "tests/test_kdiffusion.py needs k-diffusion: pip install --no-deps k-diffusion==0.1.1.post1 "
      "torchsde==0.2.6 torchdiffeq==0.2.5 trampoline==0.1.2"
    )
  pkg = types.ModuleType("_kdiffusion_ref")
  pkg.__path__ = []
  utils = types.ModuleType("_kdiffusion_ref.utils")
  utils.append_dims = lambda x, n: x[(...,) + (None,) * (n - x.ndim)]
  sys.modules.setdefault("_kdiffusion_ref", pkg)
  sys.modules.setdefault("_kdiffusion_ref.utils", utils)
  path = Path(next(iter(spec.submodule_search_locations))) / "sampling.py"
  mod_spec = importlib.util.spec_from_file_location("_kdiffusion_ref.sampling", path)
  mod = importlib.util.module_from_spec(mod_spec)
  mod_spec.loader.exec_module(mod)
  return mod


K = _load_kdiffusion_sampling()
EDM = processes.EDM()
SHAPE = (64, 2)
ANG = np.arange(8) * 2 * np.pi / 8
MEANS = np.stack([np.cos(ANG), np.sin(ANG)], 1)


def x0_model(x, sigma):
  """The exact denoiser of an 8-Gaussian ring at noise level sigma (alpha = 1)."""
  s = jnp.reshape(sigma, (-1, 1))
  return gaussian.mixture_posterior(x, 1.0, s, np.full(8, 0.125), MEANS, np.full(8, 0.15))[0]


def net(x_in, sigma):
  """A fixed smooth 'network' F for the preconditioned (prediction="edm") checks."""
  s = jnp.reshape(sigma, (-1, 1))
  return jnp.tanh(1.3 * x_in + 0.2) - 0.1 * jnp.log(s) * x_in[:, ::-1]


def edm_denoiser(x, sigma, sd=0.5):
  s = jnp.reshape(sigma, (-1, 1))
  c_skip, c_out, c_in = sd**2 / (s**2 + sd**2), s * sd / jnp.sqrt(s**2 + sd**2), 1 / jnp.sqrt(s**2 + sd**2)
  return c_skip * x + c_out * net(c_in * x, sigma)


def torch_model(fn):
  def model(x, sigma):
    return torch.from_numpy(np.asarray(fn(jnp.asarray(x.numpy()), jnp.asarray(sigma.numpy()))))

  return model


def jax_noise(key, n, stream=None):
  """The noise jaxdiff draws at steps 0..n-1 (stream: a named stream folded in first)."""
  _, k = jax.random.split(key)
  if stream is not None:
    k = jax.random.fold_in(k, stream)
  return [
    torch.from_numpy(np.asarray(jax.random.normal(jax.random.fold_in(k, i), SHAPE, jnp.float64)))
    for i in range(n)
  ]


def sequence(noises):
  it = iter(noises)
  return lambda *a, **k: next(it)


@pytest.fixture(autouse=True)
def x64():
  with jax.enable_x64(True):
    yield


def run_both(sampler, n, kd_fn, prediction="x0", kd_kwargs=None, **options):
  ts = grids.karras(n, 0.002, 80.0)
  x_init = 80.0 * jax.random.normal(jax.random.key(7), SHAPE, jnp.float64)
  model = x0_model if prediction == "x0" else net
  got = jaxdiff.sample(model, EDM, SHAPE, jax.random.key(3), sampler=sampler, ts=ts, prediction=prediction,
                       x_init=x_init, **options)  # fmt: skip
  sigmas = torch.from_numpy(np.append(ts, 0.0))
  den = torch_model(x0_model if prediction == "x0" else edm_denoiser)
  want = kd_fn(den, torch.from_numpy(np.asarray(x_init)), sigmas, disable=True, **(kd_kwargs or {}))
  assert got.dtype == jnp.float64
  return np.asarray(got), want.numpy()


@pytest.mark.parametrize(
  "sampler,kd,options",
  [("euler", "sample_euler", {}), ("heun", "sample_heun", {}), ("dpm_2", "sample_dpm_2", {}),
   ("lms", "sample_lms", {}), ("lms", "sample_lms", {"order": 2}), ("dpmpp_2m", "sample_dpmpp_2m", {})],
)  # fmt: skip
@pytest.mark.parametrize("prediction", ["x0", "edm"])
def test_deterministic_samplers_match_kdiffusion(sampler, kd, options, prediction):
  kd_kwargs = {"order": options["order"]} if "order" in options else None
  got, want = run_both(sampler, 12, getattr(K, kd), prediction, kd_kwargs, **options)
  np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize(
  "sampler,kd,streams,options",
  [
    ("euler_ancestral", "sample_euler_ancestral", [None], {"eta": 0.7, "s_noise": 1.1}),
    ("dpm_2_ancestral", "sample_dpm_2_ancestral", [None], {"eta": 0.7, "s_noise": 1.1}),
    ("dpmpp_2m_sde", "sample_dpmpp_2m_sde", [None], {}),
    ("dpmpp_sde", "sample_dpmpp_sde", [NOISE_STREAM_SDE_MID, None], {"eta": 0.8}),
  ],
)
def test_stochastic_samplers_match_kdiffusion_with_shared_noise(sampler, kd, streams, options):
  n = 10
  per_stream = [jax_noise(jax.random.key(3), n, s) for s in streams]
  noises = [per_stream[j][i] for i in range(n) for j in range(len(streams))]
  kd_kwargs = {k: v for k, v in options.items()} | {"noise_sampler": sequence(noises)}
  got, want = run_both(sampler, n, getattr(K, kd), "x0", kd_kwargs, **options)
  np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9)


CHURNS = {
  "edm": {"s_churn": 40.0, "s_tmin": 0.05, "s_tmax": 50.0, "s_noise": 1.003},
  "everywhere": {"s_churn": 5.0},
  "no-op range": {"s_churn": 10.0, "s_tmin": 100.0},
}


@pytest.mark.parametrize("churn", list(CHURNS))
@pytest.mark.parametrize(
  "sampler,kd", [("euler", "sample_euler"), ("heun", "sample_heun"), ("dpm_2", "sample_dpm_2")]
)
def test_churn_matches_kdiffusion(sampler, kd, churn, monkeypatch):
  n = 16
  monkeypatch.setattr(torch, "randn_like", sequence(jax_noise(jax.random.key(3), n, NOISE_STREAM_CHURN)))
  got, want = run_both(sampler, n, getattr(K, kd), "x0", CHURNS[churn], **CHURNS[churn])
  np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9)


def test_churn_outside_its_range_is_exactly_no_churn():
  ts = grids.karras(20, 0.002, 80.0)
  kw = dict(sampler="euler", ts=ts, prediction="x0", x_init=40.0 * jnp.ones((4096, 1)))
  with jax.enable_x64(False):
    plain = jaxdiff.sample(x0_model_1d, EDM, (4096, 1), jax.random.key(0), **kw)
    noop = jaxdiff.sample(x0_model_1d, EDM, (4096, 1), jax.random.key(0), s_churn=10.0, s_tmin=100.0, **kw)
    stepper = jaxdiff.samplers.Stepper(x0_model_1d, EDM, (4096, 1), sampler="euler", ts=ts, prediction="x0",
                                       s_churn=10.0, s_tmin=100.0)  # fmt: skip
    state = stepper.init(jax.random.key(0), x_init=kw["x_init"])
    for i in range(stepper.num_steps):
      state = stepper.step(state, i)
  assert float(jnp.std(plain)) == 0.0 and float(jnp.std(noop)) == 0.0  # every sample starts at 40: no noise
  np.testing.assert_allclose(np.asarray(noop), np.asarray(plain), rtol=1e-6)  # one program each: rounding
  np.testing.assert_allclose(np.asarray(state.x), np.asarray(plain), rtol=1e-6, atol=1e-6)


def x0_model_1d(x, sigma):
  s = jnp.reshape(sigma, (-1, 1))
  return gaussian.mixture_posterior(x, 1.0, s, [0.4, 0.6], [[-0.7], [0.6]], [0.15, 0.3])[0]


@pytest.mark.parametrize("order", [2, 3])
def test_dpm_adaptive_matches_kdiffusion(order):
  x_init = 80.0 * jax.random.normal(jax.random.key(7), SHAPE, jnp.float64)
  got = jaxdiff.sample(x0_model, EDM, SHAPE, jax.random.key(3), sampler="dpm_adaptive", ts=[80.0, 0.002],
                       prediction="x0", x_init=x_init, order=order)  # fmt: skip
  den = torch_model(x0_model)
  # k-diffusion's DPMSolver directly, its times and tolerances as float64 tensors (sample_dpm_adaptive
  # makes them float32 tensors, which moves the adaptive steps by float32 rounding)
  f64 = lambda v: torch.tensor(v, dtype=torch.float64)  # noqa: E731
  solver = K.DPMSolver(den)
  x_end, info = solver.dpm_solver_adaptive(torch.from_numpy(np.array(x_init)), -f64(80.0).log(), -f64(0.002).log(),
                                           order=order, rtol=f64(0.05), atol=f64(0.0078))  # fmt: skip
  want = den(x_end, torch.full((SHAPE[0],), 0.002, dtype=torch.float64))  # jaxdiff's last step to clean
  assert info["n_accept"] > 3
  np.testing.assert_allclose(np.asarray(got), want.numpy(), rtol=1e-9, atol=1e-9)
  assert jaxdiff.nfe("dpm_adaptive", 2, order=order) >= info["nfe"] + 2
