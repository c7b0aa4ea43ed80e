"""Samplers against exact solutions: Gaussian data has a closed-form score and probability-flow ODE."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxdiff
from jaxdiff import samplers, schedules
from jaxdiff.samplers import accuracy, scan

SCHED = schedules.linear(1000)
MU, SD = 0.5, 0.3


def exact_eps(x, t, sched=SCHED):
  """eps*(x, t) for data N(MU, SD^2): sqrt(1-a)(x - sqrt(a) MU) / (a SD^2 + 1 - a)."""
  a = sched.alphas_cumprod[t].reshape((-1,) + (1,) * (x.ndim - 1))
  return jnp.sqrt(1 - a) * (x - jnp.sqrt(a) * MU) / (a * SD**2 + 1 - a)


def exact_flow_endpoint(x_init, t_start, sched=SCHED):
  """PF-ODE: (x~ - MU)/sqrt(SD^2 + sigma^2) is invariant along the flow, x~ = x/sqrt(a)."""
  a = float(sched.alphas_cumprod[t_start])
  sig2 = (1 - a) / a
  return MU + SD * (np.asarray(x_init) / np.sqrt(a) - MU) / np.sqrt(SD**2 + sig2)


def test_spacings_match_diffusers_definitions():
  np.testing.assert_array_equal(samplers.timesteps(1000, 50, "leading"), np.arange(0, 1000, 20)[::-1])
  np.testing.assert_array_equal(samplers.timesteps(1000, 50, "trailing"), np.arange(999, 0, -20))
  ls = samplers.timesteps(1000, 7, "linspace")
  assert ls[0] == 999 and ls[-1] == 0 and len(ls) == 7
  np.testing.assert_array_equal(ls, np.round(np.linspace(999, 0, 7)))
  with pytest.raises(ValueError, match="num_steps"):
    samplers.timesteps(1000, 1001, "leading")
  with pytest.raises(ValueError, match="spacing"):
    samplers.timesteps(1000, 10, "log")


def test_ddpm_1000_steps_reproduces_gaussian():
  n = 20000
  x = np.asarray(jaxdiff.sample(exact_eps, SCHED, (n, 1), jax.random.key(0), sampler="ddpm", num_steps=1000))
  assert abs(x.mean() - MU) < 4 * SD / np.sqrt(n)
  assert abs(x.std() - SD) < 0.02 * SD + 3 * SD / np.sqrt(2 * n)


@pytest.mark.parametrize("variance", ["fixed_small", "fixed_large"])
def test_ddpm_variances_give_right_mean(variance):
  x = np.asarray(
    jaxdiff.sample(
      exact_eps,
      SCHED,
      (4000, 1),
      jax.random.key(1),
      sampler="ddpm",
      num_steps=100,
      spacing="linspace",
      variance=variance,
    )
  )
  assert abs(x.mean() - MU) < 0.03
  assert 0.2 < x.std() < 0.45  # respaced ancestral sampling with the exact score: near SD


# T = 1281 so that every linspace grid below (n - 1 divides 1280) is uniform: no rounding noise.
SCHED_CONV = schedules.linear(1281)


def _errors(sampler, steps, **kw):
  x_init = jax.random.normal(jax.random.key(1), (256, 1))
  exact = exact_flow_endpoint(x_init, 1280, SCHED_CONV)
  out = []
  for n in steps:
    x = jaxdiff.sample(
      lambda x, t: exact_eps(x, t, SCHED_CONV),
      SCHED_CONV,
      (256, 1),
      jax.random.key(0),
      sampler=sampler,
      num_steps=n,
      spacing="linspace",
      x_init=x_init,
      **kw,
    )
    out.append(float(np.max(np.abs(np.asarray(x) - exact))))
  return np.array(out)


@pytest.mark.parametrize(
  "sampler,steps,lo,hi",
  [
    ("ddim", (21, 41, 81, 161), 1.85, 2.1),
    ("euler", (21, 41, 81, 161), 1.85, 2.1),
    ("heun", (11, 21, 41), 3.6, 4.8),
  ],
)  # dpmpp_2m's order: tests/test_noise_core.py (Karras grid); this grid's last log-SNR gap is 2.3-4.5x
# the one before it, where dpmpp_2m's order drops (`jaxdiff.samplers.multistep.GAP_RATIO`)
def test_deterministic_samplers_converge_with_their_order(sampler, steps, lo, hi):
  """Error against the exact probability-flow endpoint falls 2x (1st order) or 4x (2nd) per doubling.

  Heun is k-diffusion's here (frame="sigma": x/alpha against sigma/alpha)."""
  err = _errors(sampler, steps, **({"frame": "sigma"} if sampler == "heun" else {}))
  ratios = err[:-1] / err[1:]
  assert np.all(ratios > lo) and np.all(ratios < hi), (err, ratios)
  assert err[-1] < 0.03


def test_heun_flow_frame_beats_sigma_frame_on_a_chain():
  """On a VP chain Heun integrates in x/(alpha+sigma) against sigma/(alpha+sigma) by default: a
  bounded time, where the sigma frame's first step spans sigma/alpha from ~13 to ~0.3."""
  flow = _errors("heun", (11, 21))
  sigma = _errors("heun", (11, 21), frame="sigma")
  assert np.all(flow < sigma / 4), (flow, sigma)
  assert flow[-1] < 0.005


def test_euler_equals_ddim_eta0():
  """DDIM with eta = 0 is exactly Euler's method in (sigma, x / sqrt(abar)) coordinates."""
  x_init = jax.random.normal(jax.random.key(2), (64, 2))
  a = jaxdiff.sample(
    exact_eps,
    SCHED,
    (64, 2),
    jax.random.key(0),
    sampler="ddim",
    num_steps=25,
    spacing="linspace",
    x_init=x_init,
  )
  b = jaxdiff.sample(
    exact_eps,
    SCHED,
    (64, 2),
    jax.random.key(0),
    sampler="euler",
    num_steps=25,
    spacing="linspace",
    x_init=x_init,
  )
  np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-4)


def test_ddim_eta1_every_step_is_ddpm():
  """With eta = 1 and all T steps, DDIM's sigma^2 is beta~ and its mean the posterior mean."""
  sched = schedules.linear(100, 1e-3, 0.2)
  model = lambda x, t: jnp.sin(x + t[:, None] / 50.0)
  k = jax.random.key(5)
  a = jaxdiff.sample(model, sched, (16, 3), k, sampler="ddim", num_steps=100, eta=1.0)
  b = jaxdiff.sample(model, sched, (16, 3), k, sampler="ddpm", num_steps=100)
  np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-4)


def test_ddim_sigma_closed_form():
  s2 = lambda t, p: float(samplers.ddim_sigma(SCHED, np.array(t), np.array(p), 1.0) ** 2)
  np.testing.assert_allclose(s2(420, 400), 0.147720, atol=2e-6)
  np.testing.assert_allclose(s2(980, 960), 0.324605, atol=2e-6)
  # eta = 1 for one step equals beta~
  np.testing.assert_allclose(s2(500, 499), float(SCHED.posterior_variance[500]), rtol=1e-4)


def _numpy_reference(sampler, model_np, x_init, n, eta=0.0, noises=None):
  """Plain Python/NumPy loop straight from the papers' update rules (float64)."""
  T = 1000
  ab = np.cumprod(1 - np.linspace(1e-4, 0.02, T))
  ts = np.round(np.linspace(T - 1, 0, n)).astype(int)
  A = lambda t: 1.0 if t < 0 else ab[t]
  x = np.asarray(x_init, np.float64)
  prev_x0, h_prev = None, None
  for i, t in enumerate(ts):
    tp = ts[i + 1] if i + 1 < n else -1
    eps = model_np(x, t)
    x0 = (x - np.sqrt(1 - A(t)) * eps) / np.sqrt(A(t))
    if sampler == "ddim":
      sig = eta * np.sqrt((1 - A(tp)) / (1 - A(t)) * (1 - A(t) / A(tp)))
      x = np.sqrt(A(tp)) * x0 + np.sqrt(1 - A(tp) - sig**2) * eps + (sig * noises[i] if eta else 0)
    elif sampler == "dpmpp_2m":
      al = lambda t: np.sqrt(A(t))
      sg = lambda t: np.sqrt(1 - A(t))
      if tp < 0:
        x = x0
      else:
        h = np.log(al(tp) / sg(tp)) - np.log(al(t) / sg(t))
        # second order unless the log-SNR gap is over 2.5 times the previous one
        d = x0 if prev_x0 is None or h > 2.5 * h_prev else x0 + 0.5 * (x0 - prev_x0) * h / h_prev
        x = sg(tp) / sg(t) * x - al(tp) * (np.exp(-h) - 1) * d
        h_prev = h
      prev_x0 = x0
  return x


@pytest.mark.parametrize("sampler", ["ddim", "dpmpp_2m"])
def test_scan_equals_python_loop_reference(sampler):
  model_np = lambda x, t: np.tanh(x) * (0.5 + t / 2000.0)
  model = lambda x, t: jnp.tanh(x) * (0.5 + t[:, None].astype(jnp.float32) / 2000.0)
  x_init = jax.random.normal(jax.random.key(0), (32, 2))
  got = jaxdiff.sample(
    model, SCHED, (32, 2), jax.random.key(0), sampler=sampler, num_steps=20, spacing="linspace", x_init=x_init
  )
  want = _numpy_reference(sampler, model_np, x_init, 20)
  np.testing.assert_allclose(np.asarray(got), want, rtol=1e-3, atol=1e-3)


def test_stochastic_ddim_matches_reference_with_same_noise():
  """The per-step noise is normal(fold_in(split(key)[1], i)): reproduce it in a Python loop."""
  model_np = lambda x, t: np.tanh(x) * 0.7
  model = lambda x, t: jnp.tanh(x) * 0.7
  key = jax.random.key(4)
  x_init = jax.random.normal(jax.random.key(0), (8, 2))
  k_steps = jax.random.split(key)[1]
  noises = [np.asarray(jax.random.normal(jax.random.fold_in(k_steps, i), (8, 2))) for i in range(10)]
  got = jaxdiff.sample(
    model, SCHED, (8, 2), key, sampler="ddim", num_steps=10, spacing="linspace", eta=0.7, x_init=x_init
  )
  want = _numpy_reference("ddim", model_np, x_init, 10, eta=0.7, noises=noises)
  np.testing.assert_allclose(np.asarray(got), want, rtol=1e-3, atol=1e-3)


def _cond_model(x, t, y=None):
  """A toy class-conditional model: output depends on y (label 3 plays the null class)."""
  return jnp.tanh(x) * 0.5 + 0.1 * y[:, None].astype(jnp.float32)


@pytest.mark.parametrize("sampler", ["ddim", "dpmpp_2m", "heun", "ddpm"])
def test_classifier_free_guidance_identities(sampler):
  B = 8
  y, null = jnp.arange(B) % 3, jnp.full((B,), 3)
  kw = dict(sampler=sampler, num_steps=10)
  c = jaxdiff.sample(_cond_model, SCHED, (B, 2), jax.random.key(0), cond={"y": y}, **kw)
  u = jaxdiff.sample(_cond_model, SCHED, (B, 2), jax.random.key(0), cond={"y": null}, **kw)
  g1 = jaxdiff.sample(
    _cond_model, SCHED, (B, 2), jax.random.key(0), cond={"y": y}, uncond={"y": null}, guidance_scale=1.0, **kw
  )
  g0 = jaxdiff.sample(
    _cond_model, SCHED, (B, 2), jax.random.key(0), cond={"y": y}, uncond={"y": null}, guidance_scale=0.0, **kw
  )
  np.testing.assert_allclose(np.asarray(g1), np.asarray(c), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(np.asarray(g0), np.asarray(u), rtol=1e-5, atol=1e-5)
  # scale s acts on the model output: a model linear in y makes guidance = label (1-s)*null + s*y
  g3 = jaxdiff.sample(
    _cond_model, SCHED, (B, 2), jax.random.key(0), cond={"y": y}, uncond={"y": null}, guidance_scale=3.0, **kw
  )
  lin = lambda x, t, yy=None: _cond_model(x, t, (3.0 * y - 2.0 * null).astype(jnp.float32))
  want = jaxdiff.sample(lambda x, t: lin(x, t), SCHED, (B, 2), jax.random.key(0), **kw)
  np.testing.assert_allclose(np.asarray(g3), np.asarray(want), rtol=1e-4, atol=1e-4)


def test_guidance_uses_one_batched_call_per_step():
  batches = []

  def model(x, t, y=None):
    batches.append(x.shape[0])
    return _cond_model(x, t, y)

  jaxdiff.sample(
    model,
    SCHED,
    (4, 2),
    jax.random.key(0),
    num_steps=5,
    cond={"y": jnp.zeros(4, int)},
    uncond={"y": jnp.full((4,), 3)},
    guidance_scale=2.0,
  )
  assert batches == [8]  # traced once inside the scan, with the doubled batch


def test_same_key_same_samples_and_keys_differ():
  run = lambda k: np.asarray(jaxdiff.sample(exact_eps, SCHED, (16, 2), k, sampler="ddpm", num_steps=20))
  np.testing.assert_array_equal(run(jax.random.key(7)), run(jax.random.key(7)))
  assert not np.allclose(run(jax.random.key(7)), run(jax.random.key(8)))


def test_compiles_once_for_same_shapes_and_new_params():
  def apply_fn(params, x, t):
    return jnp.tanh(x * params["w"]) + params["b"]

  f = scan._sample_jitted()
  f.clear_cache()
  p1 = {"w": jnp.ones(()), "b": jnp.zeros(())}
  p2 = {"w": 2 * jnp.ones(()), "b": jnp.ones(())}
  a = jaxdiff.sample(jaxdiff.bind(apply_fn, p1), SCHED, (4, 2), jax.random.key(0), num_steps=10)
  assert f._cache_size() == 1
  b = jaxdiff.sample(jaxdiff.bind(apply_fn, p2), SCHED, (4, 2), jax.random.key(1), num_steps=10)
  assert f._cache_size() == 1  # new parameters and key: no recompilation
  assert not np.allclose(np.asarray(a), np.asarray(b))
  jaxdiff.sample(jaxdiff.bind(apply_fn, p1), SCHED, (4, 2), jax.random.key(0), num_steps=20)
  assert f._cache_size() == 2  # a new step count is a new program


def test_trajectory_shapes_and_endpoints():
  x, traj = jaxdiff.sample(
    exact_eps, SCHED, (5, 2), jax.random.key(0), num_steps=10, return_trajectory=True, spacing="linspace"
  )
  assert traj["x"].shape == (11, 5, 2) and traj["x0"].shape == (10, 5, 2)
  np.testing.assert_array_equal(np.asarray(traj["t"]), samplers.timesteps(1000, 10, "linspace"))
  np.testing.assert_allclose(np.asarray(traj["x"][-1]), np.asarray(x))
  for s in ("heun", "dpmpp_2m", "ddpm", "euler_ancestral"):
    _, tr = jaxdiff.sample(
      exact_eps, SCHED, (5, 2), jax.random.key(0), sampler=s, num_steps=6, return_trajectory=True
    )
    assert tr["x"].shape == (7, 5, 2) and tr["x0"].shape == (6, 5, 2), s


@pytest.mark.parametrize("prediction", ["x0", "v"])
def test_any_prediction_type_gives_same_samples(prediction):
  """The exact model expressed as x0 or v gives the eps model's samples."""

  def model(x, t):
    return jaxdiff.convert_prediction(SCHED, x, t, exact_eps(x, t), "eps", prediction)

  x_init = jax.random.normal(jax.random.key(0), (64, 1))
  for s in ("ddim", "dpmpp_2m", "heun"):
    a = jaxdiff.sample(exact_eps, SCHED, (64, 1), jax.random.key(0), sampler=s, num_steps=20, x_init=x_init)
    b = jaxdiff.sample(
      model, SCHED, (64, 1), jax.random.key(0), sampler=s, num_steps=20, x_init=x_init, prediction=prediction
    )
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=2e-3, err_msg=s)


def test_clip_x0_bounds_predictions():
  wild = lambda x, t: jnp.full_like(x, -50.0)  # eps that implies huge x0
  _, tr = jaxdiff.sample(
    wild, SCHED, (4, 2), jax.random.key(0), num_steps=10, clip_x0=1.0, return_trajectory=True
  )
  assert float(jnp.abs(tr["x0"]).max()) <= 1.0 + 1e-6
  assert float(jnp.abs(tr["x"][-1]).max()) <= 1.0 + 1e-5


# betas of SCHED in float64: the closed forms below do not go through jaxdiff's schedule code
BETAS = np.linspace(1e-4, 0.02, 1000)
ALPHA_BAR = np.cumprod(1 - BETAS)


@pytest.mark.parametrize("t", [1, 3])
def test_learned_range_variance_ends_are_posterior_variance_and_beta(t):
  """improved DDPM's learned range: the variance output v = -1 gives the posterior variance
  beta~_t = beta_t (1 - abar_{t-1}) / (1 - abar_t) (fixed_small), v = +1 gives beta_t (fixed_large),
  v = 0 their geometric mean. One ancestral step t -> t - 1 from x = 0 with eps = 0, then the
  noise-free step to clean data, leaves x = std z / sqrt(abar_{t-1}): its variance is checked."""
  n = 40_000
  beta, post = BETAS[t], BETAS[t] * (1 - ALPHA_BAR[t - 1]) / (1 - ALPHA_BAR[t])
  for v, want, fixed in (
    (-1.0, post, "fixed_small"),
    (1.0, beta, "fixed_large"),
    (0.0, np.sqrt(beta * post), None),
  ):
    model = lambda x, t, v=v: jnp.concatenate([jnp.zeros_like(x), jnp.full_like(x, v)], axis=-1)
    runs = [("learned_range", model)] + ([(fixed, lambda x, t: jnp.zeros_like(x))] if fixed else [])
    for variance, fn in runs:
      x = jaxdiff.sample(
        fn,
        SCHED,
        (n, 1),
        jax.random.key(0),
        sampler="ddpm",
        variance=variance,
        ts=np.array([t, t - 1]),
        x_init=jnp.zeros((n, 1)),
      )
      var = float(np.var(np.asarray(x, np.float64))) * ALPHA_BAR[t - 1]
      assert var == pytest.approx(want, rel=4 * np.sqrt(2 / n)), (v, variance, var, want)
  assert post < 0.75 * beta  # the two ends are told apart at these t


def test_self_conditioning_feeds_zeros_first_then_the_previous_x0_estimate():
  """DDIM with self-conditioning against a Python loop: step i's model call receives the x0 estimate
  of step i - 1 as x_self_cond, the first call zeros."""
  ts = [900, 600, 300, 100]

  def eps_model(x, t, x_self_cond):
    return 0.5 * jnp.tanh(x) + 0.3 * x_self_cond

  x_init = np.asarray(jax.random.normal(jax.random.key(3), (8, 2)), np.float64)
  got = jaxdiff.sample(
    lambda x, t, x_self_cond=None: eps_model(x, t, x_self_cond),
    SCHED,
    (8, 2),
    jax.random.key(0),
    sampler="ddim",
    ts=np.array(ts),
    x_init=jnp.asarray(x_init, jnp.float32),
    self_condition=True,
  )
  x, sc = x_init, np.zeros_like(x_init)
  for i, t in enumerate(ts):
    a, a_next = ALPHA_BAR[t], ALPHA_BAR[ts[i + 1]] if i + 1 < len(ts) else 1.0
    eps = 0.5 * np.tanh(x) + 0.3 * sc
    x0 = (x - np.sqrt(1 - a) * eps) / np.sqrt(a)
    x, sc = np.sqrt(a_next) * x0 + np.sqrt(1 - a_next) * eps, x0
  np.testing.assert_allclose(np.asarray(got), x, rtol=1e-4, atol=1e-4)
  plain = jaxdiff.sample(
    lambda x, t: eps_model(x, t, 0.0),
    SCHED,
    (8, 2),
    jax.random.key(0),
    sampler="ddim",
    ts=np.array(ts),
    x_init=jnp.asarray(x_init, jnp.float32),
  )
  assert not np.allclose(np.asarray(plain), x, atol=1e-2)  # the self-conditioning input matters here


def test_euler_ancestral_and_churn_run_and_are_stochastic():
  x_init = jax.random.normal(jax.random.key(0), (256, 1))
  for kw in (
    {"sampler": "euler_ancestral"},
    {"sampler": "heun", "s_churn": 20.0},
    {"sampler": "euler", "s_churn": 10.0},
  ):
    a = jaxdiff.sample(exact_eps, SCHED, (256, 1), jax.random.key(1), num_steps=40, x_init=x_init, **kw)
    b = jaxdiff.sample(exact_eps, SCHED, (256, 1), jax.random.key(2), num_steps=40, x_init=x_init, **kw)
    assert not np.allclose(np.asarray(a), np.asarray(b)), kw
    assert abs(float(a.mean()) - MU) < 0.06 and 0.2 < float(a.std()) < 0.4, kw


def test_bad_arguments():
  with pytest.raises(ValueError, match="Unknown sampler"):
    jaxdiff.sample(exact_eps, SCHED, (2, 1), jax.random.key(0), sampler="plms")
  with pytest.raises(ValueError, match="uncond"):
    jaxdiff.sample(exact_eps, SCHED, (2, 1), jax.random.key(0), guidance_scale=2.0)
  with pytest.raises(ValueError, match="x_init"):
    jaxdiff.sample(exact_eps, SCHED, (2, 1), jax.random.key(0), x_init=jnp.zeros((3, 1)))
  with pytest.raises(ValueError, match="prediction"):
    jaxdiff.sample(exact_eps, SCHED, (2, 1), jax.random.key(0), prediction="score")
  assert samplers.nfe("heun", 10) == 19 and samplers.nfe("ddim", 10) == 10


# ---- float64, fractional times in custom samplers, multistep order on every default grid ---------


def test_float64_x_init_keeps_every_array_in_float64():
  """Under jax_enable_x64 a float64 x_init gives a float64 run: Heun on EDM with the exact Gaussian
  denoiser equals a float64 numpy Heun to rounding, and the model sees float64 inputs and times."""
  seen = []
  ts = jaxdiff.grids.karras(200, 0.002, 80.0)

  def model(x, t):
    seen.append((x.dtype, t.dtype))
    s2 = jnp.reshape(t, (-1, 1)) ** 2
    return MU + SD**2 / (SD**2 + s2) * (x - MU)  # E[x0 | x] for N(MU, SD^2) data, alpha = 1

  z = np.random.default_rng(0).standard_normal((8, 1)) * 80.0
  with jax.enable_x64(True):
    x = jaxdiff.sample(model, jaxdiff.EDM(), (8, 1), jax.random.key(0), sampler="heun", ts=ts, prediction="x0",
                       x_init=jnp.asarray(z))  # fmt: skip
    noisy = jaxdiff.sample(model, jaxdiff.EDM(), (8, 1), jax.random.key(0), sampler="euler_ancestral", ts=ts[:5],
                           prediction="x0", x_init=jnp.asarray(z))  # fmt: skip
  sig = np.append(ts, 0.0)
  y = z.copy()
  d_of = lambda y, s: (y - (MU + SD**2 / (SD**2 + s * s) * (y - MU))) / s  # noqa: E731
  for i in range(len(ts)):
    d = d_of(y, sig[i])
    y_e = y + (sig[i + 1] - sig[i]) * d
    y = y_e if sig[i + 1] == 0 else y + (sig[i + 1] - sig[i]) * 0.5 * (d + d_of(y_e, sig[i + 1]))
  assert x.dtype == jnp.float64 and noisy.dtype == jnp.float64
  assert set(seen) == {(np.dtype("float64"), np.dtype("float64"))}, seen
  np.testing.assert_allclose(np.asarray(x), y, rtol=1e-11, atol=1e-11)  # float32 state: ~1e-6 apart


class _FractionalProbe(samplers.Sampler):
  """A custom sampler that evaluates the model half a timestep below each grid level."""

  name = "test_fractional_probe"

  def step(self, ctx, state, inp, final):
    t = inp.t - 0.5
    a, s = ctx.process.alpha_sigma(t)
    d = ctx.denoise(state.x, t, a, s, state.x0)
    return samplers.State(samplers.ddim_update(inp.alpha_next, inp.sigma_next, d.x0, d.eps), d.x0, ()), d.x0


samplers.register(_FractionalProbe, replace=True)


def test_custom_sampler_fractional_time_on_a_chain_is_the_level_of_its_alpha_sigma():
  """ctx.denoise at a fractional time on an integer chain hands the model that time (not its
  integer part), so the output is read at the level whose alpha and sigma the step gave."""
  proc = jaxdiff.processes.as_process(SCHED)

  def model(x, t):  # the exact eps at the time it is given (interpolated between timesteps)
    a, s = proc.alpha_sigma(t)
    a, s = a.reshape(-1, 1), s.reshape(-1, 1)
    return s * (x - a * MU) / (a * a * SD**2 + s * s)

  x_init = jax.random.normal(jax.random.key(0), (16, 1))
  _, traj = jaxdiff.sample(model, SCHED, (16, 1), jax.random.key(1), sampler="test_fractional_probe",
                           num_steps=10, x_init=x_init, return_trajectory=True)  # fmt: skip
  t0 = float(jaxdiff.samplers.timesteps(1000, 10)[0]) - 0.5
  a, s = (float(v) for v in proc.alpha_sigma(jnp.float32(t0)))
  want = MU + a * SD**2 / (a * a * SD**2 + s * s) * (np.asarray(x_init) - a * MU)
  np.testing.assert_allclose(np.asarray(traj["x0"][0]), want, rtol=1e-5, atol=1e-5)


MULTISTEP = ("dpmpp_2m", "dpmpp_3m", "unipc")


def test_multistep_solvers_near_euler_and_converging_on_default_grids_as_the_readme_table_says():
  """Exact 8-Gaussian denoiser, float64, against a 1000-step Heun (`jaxdiff.samplers.accuracy`):
  dpmpp_2m / 3m and unipc on every process's default grid converge as steps double and stay near
  Euler's error (the flow grid's last log-SNR gap once made dpmpp_3m ten times worse than Euler at
  15-20 steps); README's table under "### Samplers" is the script's output. One test: the table
  and the checks share the runs."""
  for process in accuracy.PROCESSES:
    euler = accuracy.errors(process, "euler")
    for name in MULTISTEP:
      e = accuracy.errors(process, name)
      assert np.all(np.diff(e) < 0), (process, name, e)
      assert np.all(e[1:] <= 1.3 * euler[1:]) and e[0] <= 2.0 * euler[0], (process, name, e, euler)
  from helpers import documented_text

  text = documented_text()  # README.md and the guides (docs/guides/functional-api.md)
  start, end = "<!-- sampler accuracy table -->\n", "\n<!-- end sampler accuracy table -->"
  assert start in text and end in text, "README's Samplers section lost its accuracy table markers"
  assert text.split(start, 1)[1].split(end, 1)[0].strip() == accuracy.table()


@pytest.mark.parametrize("sampler", ["dpmpp_2m", "heun"])
def test_jitted_stepper_step_takes_a_traced_index_and_compiles_once(sampler):
  proc = jaxdiff.EDM()

  def model(x, t):
    return MU + SD**2 / (SD**2 + jnp.reshape(t, (-1, 1)) ** 2) * (x - MU)

  kw = dict(sampler=sampler, num_steps=8, prediction="x0")
  want = jaxdiff.sample(model, proc, (16, 1), jax.random.key(0), **kw)
  st = samplers.Stepper(model, proc, (16, 1), **kw)
  traces = []

  def step(state, i):
    traces.append(i)
    return st.step(state, i)

  step = jax.jit(step)
  state = st.init(jax.random.key(0))
  for i in range(st.num_steps):
    state = step(state, jnp.int32(i))
  assert len(traces) == 1
  np.testing.assert_allclose(np.asarray(state.x), np.asarray(want), rtol=1e-5, atol=1e-5)


# ---- samplers as pytrees: traced options share a program, static ones shape it ----------------


def test_new_eta_values_share_one_program_and_static_options_compile_anew():
  """eta is a leaf of the ddim pytree: 0.3 then 0.5 run in one compiled program, each equal to
  the NumPy loop with the same noise; clipped_eps is static (a new program); eta = 0 is its own,
  deterministic program."""
  model_np = lambda x, t: np.tanh(x) * 0.7
  model = lambda x, t: jnp.tanh(x) * 0.7
  key = jax.random.key(4)
  x_init = jax.random.normal(jax.random.key(0), (8, 2))
  k_steps = jax.random.split(key)[1]
  noises = [np.asarray(jax.random.normal(jax.random.fold_in(k_steps, i), (8, 2))) for i in range(10)]
  f = scan._sample_jitted()
  f.clear_cache()

  def run(**options):
    return jaxdiff.sample(
      model, SCHED, (8, 2), key, num_steps=10, spacing="linspace", x_init=x_init, **options
    )

  for eta in (0.3, 0.5):
    want = _numpy_reference("ddim", model_np, x_init, 10, eta=eta, noises=noises)
    np.testing.assert_allclose(np.asarray(run(sampler="ddim", eta=eta)), want, rtol=1e-3, atol=1e-3)
  assert f._cache_size() == 1
  run(sampler=samplers.get("ddim")(eta=0.7))  # a Sampler object: the same pytree structure
  assert f._cache_size() == 1
  run(sampler="ddim", eta=0.5, clipped_eps=False)
  assert f._cache_size() == 2
  want = _numpy_reference("ddim", model_np, x_init, 10)
  np.testing.assert_allclose(np.asarray(run(sampler="ddim", eta=0.0)), want, rtol=1e-3, atol=1e-3)
  assert f._cache_size() == 3


def test_sampler_pytree_round_trip_keeps_traced_leaves_and_static_structure():
  smp = samplers.get("heun")(s_churn=2.0, s_noise=1.25, frame="sigma")
  leaves, treedef = jax.tree_util.tree_flatten(smp)
  assert sorted(leaves) == sorted([2.0, 0.0, float("inf"), 1.25])  # s_churn, s_tmin, s_tmax, s_noise
  assert samplers.get("heun").traced_options() == ("s_churn", "s_tmin", "s_tmax", "s_noise")
  back = jax.tree_util.tree_unflatten(treedef, leaves)
  assert type(back) is type(smp) and back == smp and back.frame == "sigma"
  through_jit = jax.jit(lambda s: s)(smp)  # leaves become arrays, read back as Python floats
  assert through_jit == smp and isinstance(through_jit.s_churn, float)
  # order and corrector are static; gap_ratio is traced (a new ratio reuses the program)
  assert jax.tree_util.tree_leaves(samplers.get("unipc")(order=3, corrector=False)) == [2.5]
  assert jax.tree_util.tree_structure(samplers.get("unipc")(order=3)) != jax.tree_util.tree_structure(
    samplers.get("unipc")(order=2)
  )
  ddim = samplers.get("ddim")(eta=0.0)
  assert ddim.is_zero("eta") and not ddim.replace(eta=0.4).is_zero("eta") and ddim.replace(eta=0.4).eta == 0.4
  assert jax.tree_util.tree_structure(ddim) != jax.tree_util.tree_structure(ddim.replace(eta=0.4))
  for name in samplers.SAMPLERS:  # every registered sampler: defaults survive the round trip
    s = samplers.get(name)()
    assert jax.tree_util.tree_unflatten(*reversed(jax.tree_util.tree_flatten(s))) == s, name


def test_sampler_options_are_refused_by_name_at_construction_and_replace():
  ddim = samplers.get("ddim")
  with pytest.raises(
    jaxdiff.errors.SamplingError, match=r"sampler 'ddim' does not take order; it takes: clipped_eps, eta"
  ):
    ddim(order=2)
  with pytest.raises(jaxdiff.errors.SamplingError, match="sampler 'ddim' does not take s_churn"):
    ddim(eta=0.1).replace(s_churn=1.0)
  with pytest.raises(jaxdiff.errors.SamplingError, match="by keyword"):
    ddim(0.5)
  with pytest.raises(jaxdiff.errors.SamplingError, match="eta must be a finite number >= 0"):
    ddim(eta=0.1).replace(eta=-1.0)
  with pytest.raises(jaxdiff.errors.SamplingError, match="option eta must be a scalar, got shape \\(2,\\)"):
    jaxdiff.sample(exact_eps, SCHED, (2, 1), jax.random.key(0), sampler="ddim", eta=jnp.ones(2))
  with pytest.raises(jaxdiff.errors.SamplingError, match="set them on the object"):
    jaxdiff.sample(exact_eps, SCHED, (2, 1), jax.random.key(0), sampler=ddim(), eta=0.5)
  with pytest.raises(TypeError, match="declare a sampler's options as fields"):

    class _OldStyle(samplers.Sampler):  # noqa: F841 (the class statement is what is refused)
      options = {"gain": 1.0}


def test_traced_option_under_a_user_replace_is_not_taken_for_its_old_zero():
  """A sampler whose eta was 0 given a traced eta by replace runs the stochastic program."""
  model = lambda x, t: jnp.tanh(x) * 0.7
  x_init = jax.random.normal(jax.random.key(0), (8, 2))
  kw = dict(num_steps=10, spacing="linspace", x_init=x_init)
  run = jax.jit(
    lambda eta: jaxdiff.sample(
      model, SCHED, (8, 2), jax.random.key(4), sampler=samplers.get("ddim")().replace(eta=eta), **kw
    )
  )
  want = jaxdiff.sample(model, SCHED, (8, 2), jax.random.key(4), sampler="ddim", eta=0.6, **kw)
  np.testing.assert_allclose(np.asarray(run(jnp.float32(0.6))), np.asarray(want), rtol=1e-5, atol=1e-6)


def test_vmap_over_a_stacked_sampler_runs_each_option_value():
  etas = jnp.asarray([0.2, 0.9])
  model = lambda x, t: jnp.tanh(x) * 0.7
  x_init = jax.random.normal(jax.random.key(0), (8, 2))
  kw = dict(num_steps=6, spacing="linspace", x_init=x_init)
  run = lambda smp: jaxdiff.sample(model, SCHED, (8, 2), jax.random.key(4), sampler=smp, **kw)
  both = jax.vmap(run)(samplers.get("ddim")(eta=etas))
  for i, eta in enumerate((0.2, 0.9)):
    np.testing.assert_allclose(
      np.asarray(both[i]), np.asarray(run(samplers.get("ddim")(eta=eta))), rtol=1e-5, atol=1e-6
    )


def test_custom_sampler_snippet_of_the_guide_runs():
  import re

  from helpers import documented_text

  block = re.search(r"<!-- custom sampler snippet -->\s*```python\n(.*?)```", documented_text(), re.S).group(
    1
  )
  registry = samplers.base._REGISTRY
  registry.pop("scaled_ddim", None)  # the guide's own run (tests/test_guides.py) may have registered it
  try:
    exec(compile(block, "functional-api.md", "exec"), {})
  finally:
    registry.pop("scaled_ddim", None)


def test_gap_ratio_option_sets_where_multistep_solvers_drop_their_order():
  """gap_ratio=inf never lowers the order (diffusers' rule): on the flow grid, whose last gap is
  eight times the one before it, extrapolating over that gap costs several times Euler's error,
  while the default ratio stays near Euler; on trailing spacing (a gap at most 1.61 times the one
  before, 2.2 times the one two back) the default rule never fires: the samples are those of
  gap_ratio=inf (diffusers parity), and a ratio of 1.5 changes them."""
  euler = accuracy.errors("flow", "euler", (10,))[0]
  for name in MULTISTEP:
    assert accuracy.errors("flow", name, (10,), gap_ratio=float("inf"))[0] > 3 * euler, name
    assert accuracy.errors("flow", name, (10,))[0] < 1.1 * euler, name
  model = lambda x, t: jnp.tanh(x) * 0.7  # noqa: E731
  x_init = jax.random.normal(jax.random.key(0), (8, 2))
  runs = [
    jaxdiff.sample(
      model,
      SCHED,
      (8, 2),
      jax.random.key(1),
      sampler="dpmpp_3m",
      num_steps=20,
      spacing="trailing",
      x_init=x_init,
      gap_ratio=r,
    )  # fmt: skip
    for r in (1.5, 2.5, float("inf"))
  ]
  np.testing.assert_array_equal(np.asarray(runs[1]), np.asarray(runs[2]))
  assert not np.allclose(np.asarray(runs[0]), np.asarray(runs[2]))
  with pytest.raises(jaxdiff.errors.SamplingError, match="gap_ratio must be a number >= 1"):
    jaxdiff.sample(model, SCHED, (8, 2), jax.random.key(1), sampler="unipc", num_steps=5, gap_ratio=0.5)


def test_single_step_errors_use_the_librarys_first_order_step():
  """accuracy.local_errors' first-order column is jaxdiff's euler step from the exact state."""
  grid, exact = accuracy.exact_states("EDM", 6)
  proc = accuracy.PROCESSES["EDM"]()
  for r in accuracy.local_errors("EDM", 6)[:2]:
    i = r["step"]
    with jax.enable_x64(True):
      _, traj = jaxdiff.sample(accuracy._model(proc), proc, (128, 2), jax.random.key(1), sampler="euler",
                               ts=grid[i : i + 2], prediction="x0", x_init=jnp.asarray(exact[i]),
                               return_trajectory=True)  # fmt: skip
    err = float(np.sqrt(np.mean((np.asarray(traj["x"][1]) - exact[i + 1]) ** 2)))
    np.testing.assert_allclose(err, r["first"], rtol=1e-9)
    assert r["second"] < r["first"]  # on the noisy half of the grid the second order helps
