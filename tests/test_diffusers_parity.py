"""Same model, schedule, steps and starting noise -> the same samples as diffusers' schedulers.

Skipped when torch or diffusers is missing (the Makefile installs both where a CPU torch wheel
is at hand).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

import jaxdiff  # noqa: E402
from jaxdiff import schedules  # noqa: E402

T = 1000


def jax_model(x, t):
  tt = t.astype(jnp.float32).reshape((-1,) + (1,) * (x.ndim - 1))
  return jnp.sin(1.3 * x + tt / 300.0) * 0.8 + 0.05 * x


def torch_model(x, t):
  return torch.sin(1.3 * x + float(t) / 300.0) * 0.8 + 0.05 * x


def _run_diffusers(scheduler, x_init, n, **step_kw):
  scheduler.set_timesteps(n)
  x = torch.from_numpy(np.asarray(x_init)) * scheduler.init_noise_sigma
  for t in scheduler.timesteps:
    out = torch_model(scheduler.scale_model_input(x, t), t)
    x = scheduler.step(out, t, x, **step_kw).prev_sample
  return x.numpy(), scheduler.timesteps.numpy()


def assert_close(got, want):
  """Float32 agreement relative to the sample's scale (a toy model can drive |x| far above 1)."""
  got = np.asarray(got)
  scale = max(1.0, float(np.abs(want).max()))
  np.testing.assert_allclose(got / scale, want / scale, rtol=0, atol=2e-5)


def _schedules():
  return [("linear", schedules.linear(T)), ("cosine", schedules.cosine(T))]


@pytest.mark.parametrize("spacing", ["leading", "trailing"])
@pytest.mark.parametrize("name,sched", _schedules())
@pytest.mark.parametrize("n", [50, 30])
def test_ddim_matches_diffusers(spacing, name, sched, n):
  ddim = diffusers.DDIMScheduler(
    num_train_timesteps=T,
    trained_betas=np.asarray(sched.betas, np.float64),
    set_alpha_to_one=True,
    steps_offset=0,
    clip_sample=False,
    timestep_spacing=spacing,
    prediction_type="epsilon",
  )
  ddim.alphas_cumprod = torch.from_numpy(np.array(sched.alphas_cumprod))  # the same float32 values
  x_init = jax.random.normal(jax.random.key(0), (4, 8, 8, 3))
  want, ts = _run_diffusers(ddim, x_init, n, eta=0.0)
  got = jaxdiff.sample(
    jax_model,
    sched,
    x_init.shape,
    jax.random.key(1),
    sampler="ddim",
    num_steps=n,
    spacing=spacing,
    x_init=x_init,
  )
  np.testing.assert_array_equal(jaxdiff.timesteps(T, n, spacing), ts)
  assert_close(got, want)


@pytest.mark.parametrize("name,sched", _schedules())
@pytest.mark.parametrize("n", [20, 25])
def test_dpmpp_2m_matches_diffusers(name, sched, n):
  dpm = diffusers.DPMSolverMultistepScheduler(
    num_train_timesteps=T,
    trained_betas=np.asarray(sched.betas, np.float64),
    algorithm_type="dpmsolver++",
    solver_order=2,
    lower_order_final=True,
    final_sigmas_type="zero",
    timestep_spacing="trailing",
    prediction_type="epsilon",
  )
  dpm.alphas_cumprod = torch.from_numpy(np.array(sched.alphas_cumprod))
  x_init = jax.random.normal(jax.random.key(0), (4, 8, 8, 3))
  want, ts = _run_diffusers(dpm, x_init, n)
  got = jaxdiff.sample(
    jax_model,
    sched,
    x_init.shape,
    jax.random.key(1),
    sampler="dpmpp_2m",
    num_steps=n,
    spacing="trailing",
    x_init=x_init,
  )
  np.testing.assert_array_equal(jaxdiff.timesteps(T, n, "trailing"), ts)
  assert_close(got, want)


def test_v_prediction_ddim_matches_diffusers():
  sched = schedules.linear(T)
  ddim = diffusers.DDIMScheduler(
    num_train_timesteps=T,
    trained_betas=np.asarray(sched.betas, np.float64),
    set_alpha_to_one=True,
    steps_offset=0,
    clip_sample=False,
    timestep_spacing="trailing",
    prediction_type="v_prediction",
  )
  ddim.alphas_cumprod = torch.from_numpy(np.array(sched.alphas_cumprod))
  x_init = jax.random.normal(jax.random.key(3), (2, 4, 4, 1))
  want, _ = _run_diffusers(ddim, x_init, 25, eta=0.0)
  got = jaxdiff.sample(
    jax_model,
    sched,
    x_init.shape,
    jax.random.key(1),
    sampler="ddim",
    num_steps=25,
    spacing="trailing",
    x_init=x_init,
    prediction="v",
  )
  assert_close(got, want)


@pytest.mark.parametrize("clipped_eps", [True, False])
def test_ddim_clipped_eps_matches_use_clipped_model_output(clipped_eps):
  """With clip_x0, ddim's clipped_eps is diffusers' use_clipped_model_output (False: DDIMPipeline's
  default, the model's own eps in the update)."""
  sched = schedules.linear(T)
  ddim = diffusers.DDIMScheduler(
    num_train_timesteps=T,
    trained_betas=np.asarray(sched.betas, np.float64),
    set_alpha_to_one=True,
    steps_offset=0,
    clip_sample=True,
    clip_sample_range=1.0,
    timestep_spacing="leading",
    prediction_type="epsilon",
  )
  ddim.alphas_cumprod = torch.from_numpy(np.array(sched.alphas_cumprod))
  x_init = 2.0 * jax.random.normal(jax.random.key(4), (2, 4, 4, 1))
  want, _ = _run_diffusers(ddim, x_init, 20, eta=0.0, use_clipped_model_output=clipped_eps)
  other, _ = _run_diffusers(ddim, x_init, 20, eta=0.0, use_clipped_model_output=not clipped_eps)
  assert np.abs(want - other).max() > 1e-2  # the clipping matters here
  got = jaxdiff.sample(
    jax_model, sched, x_init.shape, jax.random.key(1), sampler="ddim", num_steps=20, x_init=x_init,
    clip_x0=1.0, clipped_eps=clipped_eps,
  )  # fmt: skip
  assert_close(got, want)
