"""One- and two-step models against closed forms: for Gaussian data N(mu, s^2) the rectified flow's
probability-flow map is affine, x_r = mu_r + (sig_r / sig_t)(x_t - mu_t) with mu_t = (1 - t) mu and
sig_t^2 = (1 - t)^2 s^2 + t^2, so the average velocity u(x, r, t) = (x - Phi_{t->r}(x)) / (t - r),
the instantaneous velocity and the consistency function f(x, t) = Phi_{t->0}(x) are exact. The
MeanFlow and shortcut losses vanish at them, the samplers land on the ODE's end point, the JVP
target equals finite differences, and the recipes validate and build their networks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import load_config_file

import jaxdiff
from jaxdiff import few_step
from jaxdiff.config_utils import validate_config
from jaxdiff.errors import ConfigError
from jaxdiff.models import MLP, DiT, UNet, create_model, dummy_inputs
from jaxdiff.samplers.few_step import ode_step

pytestmark = pytest.mark.usefixtures("fast_compiles")

MU = jnp.array([0.7, -0.4, 0.1, 0.5])
S = jnp.array([0.3, 0.6, 0.05, 1.2])


def _bc(a, x):
  return jnp.reshape(a, jnp.shape(a) + (1,) * (x.ndim - jnp.ndim(a)))


def mean_std(t):
  t = jnp.asarray(t, jnp.float32)[..., None]
  return (1.0 - t) * MU, jnp.sqrt(jnp.square((1.0 - t) * S) + jnp.square(t))


def flow_map(x, t, r):
  """Phi_{t -> r}(x): the probability-flow ODE's solution, per example times t, r [B]."""
  m_t, s_t = mean_std(t)
  m_r, s_r = mean_std(r)
  return m_r + s_r / s_t * (x - m_t)


def exact_velocity(x, t, **_):
  m_t, s_t = mean_std(t)
  tt = jnp.asarray(t, jnp.float32)[..., None]
  ds = (tt - (1.0 - tt) * jnp.square(S)) / s_t
  return -MU + ds / s_t * (x - m_t)


def exact_mean_velocity(x, t, r=None, **_):
  r = t if r is None else r
  gap = jnp.asarray(t - r, jnp.float32)
  safe = jnp.where(gap > 0, gap, 1.0)
  avg = (x - flow_map(x, t, jnp.where(gap > 0, r, 0.0))) / safe[..., None]
  return jnp.where((gap > 0)[..., None], avg, exact_velocity(x, t))


def gaussian_data(key, n=256):
  return MU + S * jax.random.normal(key, (n, 4))


# ---- MeanFlow ---------------------------------------------------------------------------------


def test_meanflow_loss_vanishes_at_the_exact_average_velocity():
  x0 = gaussian_data(jax.random.key(0))
  opts = {"velocity_fn": exact_velocity, "ratio": 0.75}
  loss, metrics = jaxdiff.loss(
    exact_mean_velocity, jaxdiff.RectifiedFlow(), x0, jax.random.key(1), prediction="mean_velocity",
    few_step_options={**opts, "adaptive_p": 0.0},
  )  # fmt: skip
  assert float(metrics["loss_mean_flow"]) < 1e-9 and float(loss) < 1e-9
  # and it does not vanish for a model 1% off
  off = lambda x, t, r=None: 1.01 * exact_mean_velocity(x, t, r)
  loss_off, _ = jaxdiff.loss(
    off, jaxdiff.RectifiedFlow(), x0, jax.random.key(1), prediction="mean_velocity",
    few_step_options={**opts, "adaptive_p": 0.0},
  )  # fmt: skip
  assert float(loss_off) > 1e-6


def test_improved_meanflow_loss_at_the_exact_model_is_the_exact_flow_matching_loss():
  # velocity="model": du/dt along the network's own velocity, regression to eps - x0. By the
  # MeanFlow identity u + (t - r) du/dt is the instantaneous velocity, so at the exact average
  # velocity every example's error is that of exact flow matching, whatever r is.
  x0 = gaussian_data(jax.random.key(0), n=512)
  k_t, k_r, k_n = jax.random.split(jax.random.key(7), 3)
  t = jax.random.uniform(k_t, (512,), minval=0.05, maxval=1.0)
  r = t * jax.random.uniform(k_r, (512,))
  noise = jax.random.normal(k_n, x0.shape)
  common = dict(prediction="mean_velocity", t=t, noise=noise)
  opts = {"velocity": "model", "r": r, "adaptive_p": 0.0}
  loss, metrics = jaxdiff.loss(
    exact_mean_velocity, jaxdiff.RectifiedFlow(), x0, jax.random.key(1), few_step_options=opts, **common
  )
  x_t = (1.0 - t)[:, None] * x0 + t[:, None] * noise
  want = jnp.mean(jnp.square(exact_velocity(x_t, t) - (noise - x0)))
  np.testing.assert_allclose(float(loss), float(want), rtol=2e-4)
  assert float(metrics["loss_mean_flow"]) > 0.1  # not the degenerate zero of regressing u on itself
  # a network 30% off along r < t: u + (t - r) du/dt is then 1.3 times the exact velocity there
  scale = 1.0 + 0.3 * (t > r)[:, None]
  off = lambda x, tt, r=None: exact_mean_velocity(x, tt, r) * (1.0 + 0.3 * (tt > r)[:, None])
  loss_off, _ = jaxdiff.loss(
    off, jaxdiff.RectifiedFlow(), x0, jax.random.key(1), few_step_options=opts, **common
  )
  want_off = jnp.mean(jnp.square(scale * exact_velocity(x_t, t) - (noise - x0)))
  np.testing.assert_allclose(float(loss_off), float(want_off), rtol=2e-4)
  assert float(loss_off) > float(loss) * 1.05


def test_meanflow_target_equals_finite_differences_of_the_network():
  # a smooth two-time network (the models' sinusoidal embeddings resolve 1/1000 in t, too fine
  # for float32 differences): the JVP's du/dt along (v, 1, 0) against central differences
  k1, k2, k3, k4 = jax.random.split(jax.random.key(0), 4)
  w1, w2 = jax.random.normal(k1, (4, 16)) / 2, jax.random.normal(k2, (16, 4)) / 4
  a, b = jax.random.normal(k3, (2, 16))

  def u_fn(x, t, r):
    h = jnp.tanh(x @ w1 + t[:, None] * a + (t - r)[:, None] * b)
    return h @ w2 + jnp.sin(3.0 * t)[:, None] * x

  x = jax.random.normal(k4, (8, 4))
  t = jnp.linspace(0.3, 0.9, 8)
  r = t * jnp.linspace(0.1, 0.8, 8)
  v = jax.random.normal(jax.random.key(3), x.shape)
  u, target = few_step.meanflow_target(u_fn, x, t, r, v)
  h = 1e-3
  dudt = (u_fn(x + h * v, t + h, r) - u_fn(x - h * v, t - h, r)) / (2 * h)
  fd_target = v - (t - r)[:, None] * dudt
  np.testing.assert_allclose(np.asarray(u), np.asarray(u_fn(x, t, r)), rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(np.asarray(target), np.asarray(fd_target), rtol=1e-3, atol=1e-3)
  assert float(jnp.max(jnp.abs(target - v))) > 1e-1  # the JVP term is not negligible here


@pytest.mark.parametrize("sampler", ["meanflow", "shortcut"])
@pytest.mark.parametrize("steps", [1, 2])
def test_one_and_two_mean_velocity_steps_land_on_the_exact_ode_end_point(sampler, steps):
  x1 = jax.random.normal(jax.random.key(4), (64, 4))
  out = jaxdiff.sample(
    exact_mean_velocity, jaxdiff.RectifiedFlow(), x1.shape, jax.random.key(5), sampler=sampler,
    num_steps=steps, prediction="mean_velocity", x_init=x1,
  )  # fmt: skip
  want = flow_map(x1, jnp.ones(64), jnp.zeros(64))
  np.testing.assert_allclose(np.asarray(out), np.asarray(want), rtol=1e-5, atol=1e-5)
  assert jaxdiff.samplers.nfe(sampler, steps) == steps


def test_meanflow_sampler_grid_is_uniform_and_passes_r():
  seen = []

  def model_fn(x, t, r=None):
    seen.append(r)
    return exact_mean_velocity(x, t, r)

  _, traj = jaxdiff.sample(
    model_fn, jaxdiff.RectifiedFlow(), (2, 4), jax.random.key(0), sampler="meanflow", num_steps=2,
    prediction="mean_velocity", return_trajectory=True,
  )  # fmt: skip
  np.testing.assert_allclose(np.asarray(traj["t"]), [1.0, 0.5])
  assert all(r is not None for r in seen)


def test_mean_velocity_loss_refuses_other_processes_and_one_time_methods():
  x0 = gaussian_data(jax.random.key(0), 8)
  with pytest.raises(ValueError, match="rectified-flow"):
    jaxdiff.loss(
      exact_mean_velocity, jaxdiff.processes.EDM(), x0, jax.random.key(0), prediction="mean_velocity"
    )
  with pytest.raises(ValueError, match="one-time prediction"):
    jaxdiff.loss(
      exact_mean_velocity, jaxdiff.RectifiedFlow(), x0, jax.random.key(0), prediction="mean_velocity",
      few_step="consistency",
    )  # fmt: skip


def test_meanflow_folded_guidance_moves_only_conditional_examples():
  x0 = gaussian_data(jax.random.key(0), 16)
  y = jnp.where(jnp.arange(16) < 8, 3, 10)  # 10: the null class

  def model_fn(x, t, r=None, y=None):
    return exact_mean_velocity(x, t, r) + 0.1 * (y == 10)[:, None]

  common = dict(prediction="mean_velocity", cond={"y": y}, t=jnp.full((16,), 0.6))
  opts = {"r": jnp.full((16,), 0.6), "adaptive_p": 0.0, "velocity_fn": exact_velocity}
  plain, m0 = jaxdiff.loss(
    model_fn, jaxdiff.RectifiedFlow(), x0, jax.random.key(1), few_step_options=opts, **common
  )
  guided, _ = jaxdiff.loss(
    model_fn, jaxdiff.RectifiedFlow(), x0, jax.random.key(1),
    few_step_options={**opts, "omega": 2.0, "uncond": {"y": jnp.full((16,), 10)}}, **common,
  )  # fmt: skip
  # r = t: the target is the guided field; conditional rows see omega v + (1 - omega) u_null, which
  # differs from v by (omega - 1) 0.1 = 0.1 per coordinate: 8 of 16 rows add 0.01 to the mean square.
  assert float(plain) == pytest.approx(0.01 / 2, rel=1e-4)  # the null rows are off by 0.1
  assert float(guided) == pytest.approx(0.01 / 2 + 0.01 / 2, rel=1e-4)


# ---- shortcut models --------------------------------------------------------------------------


def test_shortcut_self_consistency_holds_for_the_exact_flow():
  x = jax.random.normal(jax.random.key(0), (32, 4))
  t, d = few_step.shortcut_times(jax.random.key(1), 32, max_log2=5)
  assert bool(jnp.all(t - 2 * d >= -1e-6)) and bool(jnp.all(t <= 1.0))
  u_fn = lambda xx, tt, rr: exact_mean_velocity(xx, tt, rr)
  two = few_step.shortcut_target(u_fn, x, t, d)
  np.testing.assert_allclose(np.asarray(two), np.asarray(exact_mean_velocity(x, t, t - 2 * d)), atol=1e-5)
  loss, m = jaxdiff.loss(
    exact_mean_velocity, jaxdiff.RectifiedFlow(), x, jax.random.key(2), prediction="mean_velocity",
    few_step="shortcut", few_step_options={"velocity_fn": exact_velocity, "max_log2": 0 + 5},
  )  # fmt: skip
  # exact but for the smallest step, which bootstraps from d = 0 velocities (two Euler steps of d)
  assert float(m["loss_flow"]) < 1e-10 and float(loss) < 5e-4


# ---- consistency models -----------------------------------------------------------------------


def consistency_net(x, t, **_):
  """The exact consistency function as a "flow"-parameterised network: f = x - t F."""
  t = jnp.asarray(t, jnp.float32)
  return (x - flow_map(x, t, jnp.zeros_like(t))) / jnp.maximum(t, 1e-12)[:, None]


def test_consistency_distillation_loss_vanishes_with_the_exact_function_and_teacher():
  x0 = gaussian_data(jax.random.key(0))
  flow = jaxdiff.RectifiedFlow()
  opts = {"teacher_step": flow_map, "delta": 0.2, "huber_c": 0.0}
  loss, _ = jaxdiff.loss(consistency_net, flow, x0, jax.random.key(1), prediction="flow", few_step="consistency",
                         few_step_options=opts)  # fmt: skip
  assert float(loss) < 1e-5
  # the exact function is not consistent along the noising pairs of one example (training needs many)
  ct, _ = jaxdiff.loss(consistency_net, flow, x0, jax.random.key(1), prediction="flow", few_step="consistency",
                       few_step_options={"delta": 0.2, "huber_c": 0.0})  # fmt: skip
  assert float(ct) > 1e-3


def test_consistency_function_is_self_consistent_and_one_step_sampling_is_exact():
  x = jax.random.normal(jax.random.key(0), (16, 4))
  t = jnp.full((16,), 0.9)
  r = few_step.consistency_pair(jaxdiff.RectifiedFlow(), t, 0.5)
  np.testing.assert_allclose(np.asarray(r / (1 - r)), np.asarray(0.5 * t / (1 - t)), rtol=1e-5)
  f = lambda xx, tt: xx - tt[:, None] * consistency_net(xx, tt)
  np.testing.assert_allclose(np.asarray(f(x, t)), np.asarray(f(flow_map(x, t, r), r)), atol=1e-5)
  out = jaxdiff.sample(consistency_net, jaxdiff.RectifiedFlow(), x.shape, jax.random.key(1), sampler="consistency",
                       num_steps=1, prediction="flow", x_init=x)  # fmt: skip
  np.testing.assert_allclose(np.asarray(out), np.asarray(flow_map(x, jnp.ones(16), jnp.zeros(16))), atol=1e-5)
  two = jaxdiff.sample(consistency_net, jaxdiff.RectifiedFlow(), x.shape, jax.random.key(1), sampler="consistency",
                       num_steps=2, prediction="flow", x_init=x)  # fmt: skip
  assert bool(jnp.all(jnp.isfinite(two))) and not np.allclose(np.asarray(two), np.asarray(out))


@pytest.mark.parametrize("sampler", ["euler", "heun"])
def test_ode_step_is_the_named_samplers_step_per_example(sampler):
  x = jax.random.normal(jax.random.key(0), (6, 4))
  t = jnp.linspace(0.4, 0.95, 6)
  r = t - 0.1
  got = ode_step(exact_velocity, jaxdiff.RectifiedFlow(), x, t, r, sampler=sampler, prediction="flow")
  euler = x - (t - r)[:, None] * exact_velocity(x, t)
  if sampler == "euler":
    want = euler
  else:
    want = x - 0.5 * (t - r)[:, None] * (exact_velocity(x, t) + exact_velocity(euler, r))
  np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-6)
  # both approach the exact flow map, Heun (second order) much closer
  assert float(jnp.max(jnp.abs(got - flow_map(x, t, r)))) < {"euler": 0.1, "heun": 5e-3}[sampler]


# ---- two-time networks and recipes ------------------------------------------------------------


@pytest.mark.parametrize(
  "model,x",
  [
    (
      UNet(
        base_channels=8,
        channel_mult=(1, 2),
        num_groups=4,
        attention_resolutions=(),
        time_input="unit",
        second_time=True,
      ),
      jnp.ones((2, 8, 8, 1)),
    ),  # fmt: skip
    (MLP(hidden_dim=16, num_layers=1, time_input="unit", second_time=True), jnp.ones((2, 3))),
    (
      DiT(patch_size=2, hidden_size=16, depth=1, num_heads=2, time_input="unit", second_time=True),
      jnp.ones((2, 8, 8, 1)),
    ),  # fmt: skip
  ],
)
def test_two_time_networks_embed_the_gap_and_default_r_to_t(model, x):
  t = jnp.array([0.8, 0.5])
  params = model.init(jax.random.key(0), x, t)
  params = jax.tree_util.tree_map(lambda p: p + 0.05 * jax.random.normal(jax.random.key(1), p.shape), params)
  same = model.apply(params, x, t, r=t)
  np.testing.assert_allclose(np.asarray(model.apply(params, x, t)), np.asarray(same), atol=1e-6)
  assert float(jnp.max(jnp.abs(model.apply(params, x, t, r=jnp.zeros(2)) - same))) > 1e-4
  one_time = model.clone(second_time=False)
  p1 = one_time.init(jax.random.key(0), x, t)
  with pytest.raises(ValueError, match="second_time"):
    one_time.apply(p1, x, t, r=t)


@pytest.mark.parametrize("name", ["digits_meanflow", "digits_shortcut", "digits_consistency"])
def test_recipes_validate_and_build(name):
  config = validate_config(load_config_file(name))
  model = create_model(config)
  x, t, kw = dummy_inputs(config)
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), x, t, **kw))
  assert shapes["params"]
  assert config.sample.sampler in ("meanflow", "shortcut", "consistency")


@pytest.mark.parametrize("name", ["digits_meanflow", "imagenet256_meanflow"])
def test_meanflow_jvp_through_the_recipe_network_equals_finite_differences(name):
  # the recipe's own network (GroupNorm, attention, both time embeddings; the ImageNet DiT shrunk)
  # must be forward-differentiable, and smooth enough in t for the target to mean something
  config = validate_config(load_config_file(name))
  if config.model.name == "dit":
    config.model.update(dit_variant="", hidden_size=32, depth=1, num_heads=2, dtype="float32")
  model = create_model(config)
  x, t, kw = dummy_inputs(config)
  x = jax.random.normal(jax.random.key(1), (2,) + x.shape[1:])
  t = jnp.array([0.7, 0.4])
  r = jnp.array([0.2, 0.1])
  kw = {k: jnp.broadcast_to(v, (2,) + jnp.shape(v)[1:]) for k, v in kw.items()}
  params = model.init(jax.random.key(0), x, t, r=r, **kw)
  params = jax.tree_util.tree_map(lambda p: p + 0.02 * jax.random.normal(jax.random.key(2), p.shape), params)

  def u_fn(xx, tt, rr):
    return model.apply(params, xx, tt, r=rr, **kw)

  v = jax.random.normal(jax.random.key(3), x.shape)
  u, target = few_step.meanflow_target(u_fn, x, t, r, v)
  h = 1e-2
  fd = (u_fn(x + h * v, t + h, r) - u_fn(x - h * v, t - h, r)) / (2 * h)
  want = v - (t - r)[:, None, None, None] * fd
  scale = float(jnp.max(jnp.abs(want - v)))
  assert scale > 1e-3  # the derivative is not trivially zero
  np.testing.assert_allclose(np.asarray(target), np.asarray(want), atol=2e-2 * scale + 1e-4)


def test_imagenet256_meanflow_recipe_builds_dit_b2_with_a_second_time():
  config = validate_config(load_config_file("imagenet256_meanflow"))
  assert config.model.name == "dit" and config.model.second_time
  assert config.diffusion.prediction == "mean_velocity" and config.sample.num_steps == 1
  model = create_model(config)
  x, t, kw = dummy_inputs(config)
  params = jax.eval_shape(lambda: model.init(jax.random.key(0), x, t, **kw))["params"]
  count = sum(int(np.prod(p.shape)) for p in jax.tree_util.tree_leaves(params))
  assert 130e6 < count < 133e6  # DiT-B/2 (~130 M) and its second time embedding
  assert x.shape == (1, 32, 32, 4)  # SD-VAE latents of 256 x 256 images


def test_config_errors_name_the_field():
  c = load_config_file("digits_meanflow")
  c.model.second_time = False
  with pytest.raises(ConfigError, match="model.second_time"):
    validate_config(c)
  c = load_config_file("digits_meanflow")
  c.diffusion.process = "edm"
  with pytest.raises(ConfigError, match="diffusion.process"):
    validate_config(c)
  c = load_config_file("digits_meanflow")
  c.distill.teacher = "/somewhere"
  with pytest.raises(ConfigError, match="distill.teacher"):
    validate_config(c)
