"""Forward process, posterior, conversions and the loss, against closed forms."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxdiff
from jaxdiff import schedules

SCHED = schedules.linear(1000)


def test_q_sample_monte_carlo_moments():
  n = 200_000
  x0 = jnp.full((n, 1), 0.7)
  for t in (0, 250, 999):
    noise = jax.random.normal(jax.random.key(t), (n, 1))
    xt = np.asarray(jaxdiff.q_sample(SCHED, x0, jnp.full((n,), t), noise))
    ab = float(np.cumprod(1 - np.linspace(1e-4, 0.02, 1000))[t])
    se = np.sqrt(1 - ab) / np.sqrt(n)
    assert abs(xt.mean() - np.sqrt(ab) * 0.7) < 5 * se
    np.testing.assert_allclose(xt.var(), 1 - ab, rtol=0.02, atol=1e-7)


def test_q_sample_broadcasts_over_images_and_points():
  x_img = jnp.ones((3, 8, 8, 2))
  t = jnp.array([0, 10, 999])
  out = jaxdiff.q_sample(SCHED, x_img, t, jnp.zeros_like(x_img))
  np.testing.assert_allclose(np.asarray(out[:, 0, 0, 0]), np.asarray(SCHED.sqrt_alphas_cumprod[t]), rtol=1e-6)
  pts = jaxdiff.q_sample(SCHED, jnp.ones((3, 2)), t, jnp.ones((3, 2)))
  assert pts.shape == (3, 2)


def test_posterior_matches_bayes_rule():
  """q(x_{t-1} | x_t, x0) ∝ q(x_t | x_{t-1}) q(x_{t-1} | x0): precision-weighted Gaussian product."""
  b = np.linspace(1e-4, 0.02, 1000)
  ac = np.cumprod(1 - b)
  rng = np.random.default_rng(0)
  x0, xt = rng.normal(size=(5, 3)), rng.normal(size=(5, 3))
  t = np.array([1, 10, 300, 700, 999])
  mean, var, logvar = jaxdiff.q_posterior(
    SCHED, jnp.asarray(x0, jnp.float32), jnp.asarray(xt, jnp.float32), jnp.asarray(t)
  )
  a_t, ab_prev = (1 - b[t])[:, None], ac[t - 1][:, None]
  prec = a_t / b[t][:, None] + 1 / (1 - ab_prev)
  want_mean = (np.sqrt(a_t) / b[t][:, None] * xt + np.sqrt(ab_prev) / (1 - ab_prev) * x0) / prec
  np.testing.assert_allclose(np.asarray(mean), want_mean, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(np.asarray(var)[:, 0], 1 / prec[:, 0], rtol=1e-4)
  np.testing.assert_allclose(np.asarray(logvar)[:, 0], np.log(1 / prec[:, 0]), rtol=1e-4)


def test_posterior_consistent_with_forward_marginal():
  """Sampling x_{t-1} from the posterior with x_t ~ q(x_t|x0) gives q(x_{t-1}|x0)'s moments."""
  n, t = 400_000, 200
  x0 = jnp.full((n, 1), -0.4)
  k1, k2 = jax.random.split(jax.random.key(3))
  xt = jaxdiff.q_sample(SCHED, x0, jnp.full((n,), t), jax.random.normal(k1, x0.shape))
  mean, var, _ = jaxdiff.q_posterior(SCHED, x0, xt, jnp.full((n,), t))
  xprev = np.asarray(mean + jnp.sqrt(var) * jax.random.normal(k2, x0.shape))
  ab = float(SCHED.alphas_cumprod[t - 1])
  assert abs(xprev.mean() - np.sqrt(ab) * -0.4) < 5 * np.sqrt(1 - ab) / np.sqrt(n)
  np.testing.assert_allclose(xprev.var(), 1 - ab, rtol=0.02)


@pytest.mark.parametrize("sched", [schedules.linear(1000), schedules.cosine(1000)], ids=["linear", "cosine"])
def test_conversion_round_trips_at_all_t(sched):
  T = sched.num_timesteps
  t = jnp.arange(T)
  k1, k2 = jax.random.split(jax.random.key(0))
  x0 = jax.random.uniform(k1, (T, 4), minval=-1, maxval=1)
  eps = jax.random.normal(k2, (T, 4))
  xt = jaxdiff.q_sample(sched, x0, t, eps)
  v = jaxdiff.v_from_x0_eps(sched, x0, eps, t)
  # exact relations among the three parameterisations
  np.testing.assert_allclose(np.asarray(jaxdiff.eps_from_v(sched, xt, t, v)), np.asarray(eps), atol=2e-5)
  np.testing.assert_allclose(np.asarray(jaxdiff.x0_from_v(sched, xt, t, v)), np.asarray(x0), atol=2e-5)
  np.testing.assert_allclose(
    np.asarray(jaxdiff.eps_from_x0(sched, xt, t, x0)), np.asarray(eps), rtol=1e-3, atol=2e-3
  )
  # x0 from eps amplifies float32 rounding by 1/sqrt(abar): compare relative to that factor
  err = np.abs(np.asarray(jaxdiff.x0_from_eps(sched, xt, t, eps)) - np.asarray(x0))
  scale = np.asarray(sched.sqrt_recip_alphas_cumprod)[:, None]
  assert np.all(err <= 1e-6 * scale * 10 + 1e-6)
  for src, out in (("eps", eps), ("x0", x0), ("v", v)):
    for dst, want in (("eps", eps), ("x0", x0), ("v", v)):
      got = jaxdiff.convert_prediction(sched, xt, t, out, src, dst)
      mask = np.asarray(sched.alphas_cumprod) > 1e-3  # well-conditioned region for every pair
      np.testing.assert_allclose(
        np.asarray(got)[mask], np.asarray(want)[mask], atol=3e-3, err_msg=f"{src}->{dst}"
      )


def test_snr_and_grad():
  t = jnp.array([0, 500, 999])
  ab = np.cumprod(1.0 - np.asarray(SCHED.betas, np.float64))[[0, 500, 999]]  # exact, not 1 - float32
  np.testing.assert_allclose(np.asarray(jaxdiff.snr(SCHED, t)), ab / (1 - ab), rtol=1e-5)
  g = jax.grad(lambda x: jaxdiff.q_sample(SCHED, x, t, jnp.ones_like(x)).sum())(jnp.ones((3, 2)))
  np.testing.assert_allclose(np.asarray(g[:, 0]), np.sqrt(ab), rtol=1e-5)
  vm = jax.vmap(lambda x, tt: jaxdiff.q_sample(SCHED, x, tt, x))(jnp.ones((3, 2)), t)
  assert vm.shape == (3, 2)


def _fixed_predictor(objective, x0_hat_fn):
  """A model whose underlying x0 prediction is x0_hat_fn(x_t, t), expressed in `objective`."""

  def model(x_t, t):
    x0_hat = x0_hat_fn(x_t, t)
    return jaxdiff.convert_prediction(SCHED, x_t, t, x0_hat, "x0", objective)

  return model


@pytest.mark.parametrize("weighting", ["min_snr", "p2"])
def test_weighted_losses_agree_across_objectives(weighting):
  """Same underlying prediction -> same weighted l2 loss for eps, x0 and v objectives."""
  B = 64
  k = jax.random.split(jax.random.key(1), 3)
  x0 = jax.random.uniform(k[0], (B, 3), minval=-1, maxval=1)
  t = jax.random.randint(k[1], (B,), 0, 900)  # well-conditioned t (x0 from eps divides by sqrt(abar))
  noise = jax.random.normal(k[2], (B, 3))
  x0_hat = lambda x_t, tt: 0.3 * jnp.tanh(x_t) + 0.1
  vals = {}
  for obj in ("eps", "x0", "v"):
    vals[obj], _ = jaxdiff.loss(
      _fixed_predictor(obj, x0_hat),
      SCHED,
      x0,
      jax.random.key(9),
      prediction=obj,
      weighting=weighting,
      min_snr_gamma=5.0,
      t=t,
      noise=noise,
    )
  np.testing.assert_allclose(float(vals["x0"]), float(vals["eps"]), rtol=2e-3)
  np.testing.assert_allclose(float(vals["v"]), float(vals["eps"]), rtol=2e-3)
  # and min-SNR's x0-space weight is min(SNR, gamma) exactly
  if weighting == "min_snr":
    w = jaxdiff.loss_weight(SCHED, t, "x0", "min_snr", min_snr_gamma=5.0)
    np.testing.assert_allclose(np.asarray(w), np.minimum(np.asarray(jaxdiff.snr(SCHED, t)), 5.0), rtol=1e-6)


def test_loss_values_closed_form():
  """A model returning zeros has eps-loss E||eps||^2 = 1 and x0-loss E||x0||^2."""
  x0 = jnp.full((4096, 2), 0.5)
  zero = lambda x, t: jnp.zeros_like(x)
  l_eps, m = jaxdiff.loss(zero, SCHED, x0, jax.random.key(0), prediction="eps")
  assert abs(float(l_eps) - 1.0) < 0.05
  l_x0, _ = jaxdiff.loss(zero, SCHED, x0, jax.random.key(0), prediction="x0")
  np.testing.assert_allclose(float(l_x0), 0.25, rtol=1e-6)
  l1, _ = jaxdiff.loss(zero, SCHED, x0, jax.random.key(0), prediction="x0", loss_type="l1")
  np.testing.assert_allclose(float(l1), 0.5, rtol=1e-6)
  hub, _ = jaxdiff.loss(zero, SCHED, x0, jax.random.key(0), prediction="x0", loss_type="huber")
  np.testing.assert_allclose(float(hub), 0.5 * 0.25, rtol=1e-6)
  for q in range(4):
    assert f"loss_q{q}" in m


def test_loss_timesteps_uniform_and_labels_passed():
  seen = {}

  def model(x, t, y=None):
    seen["y"] = y
    seen["t"] = t
    return jnp.zeros_like(x)

  y = jnp.arange(8) % 3
  jaxdiff.loss(model, SCHED, jnp.zeros((8, 2)), jax.random.key(0), cond={"y": y})
  assert seen["y"] is y
  # uniform timesteps: a model returning t with x0 = 0 and an l1 x0-loss has loss = mean(t)
  ts = jax.jit(
    jax.vmap(
      lambda kk: jaxdiff.loss(
        lambda x, t: jnp.zeros_like(x) + t[:, None].astype(jnp.float32),
        SCHED,
        jnp.zeros((256, 1)),
        kk,
        prediction="x0",
        loss_type="l1",
      )[0]
    )
  )(jax.random.split(jax.random.key(1), 16))
  mean_t = float(ts.mean())  # 4096 draws of U{0..999}: sd of the mean = 288.7/64 = 4.5
  assert abs(mean_t - 499.5) < 25, mean_t


def test_loss_self_conditioning_zero_first_pass_and_stop_gradient():
  """Self-conditioning (Chen et al.): the first pass gets x_self_cond = 0; the second gets the first
  pass's x0 estimate on about half of the examples (0 on the rest), as a constant: the gradient is
  the one of the plain loss with that input fixed, not the one through both passes."""
  b = 64
  x0 = 0.5 * jax.random.normal(jax.random.key(0), (b, 4, 4, 1))
  noise = jax.random.normal(jax.random.key(1), x0.shape)
  t = jnp.arange(b) * 9 + 1  # 1 .. 568: x0 = (x_t - sqrt(1 - abar) eps) / sqrt(abar) stays well scaled
  params = {"a": jnp.float32(0.3), "b": jnp.float32(0.7)}

  def net(p, x, x_self_cond):
    return p["a"] * x + p["b"] * x_self_cond

  seen = []

  def recording(x, t, x_self_cond=None):
    seen.append(np.asarray(x_self_cond))
    return net(params, x, x_self_cond)

  jaxdiff.loss(recording, SCHED, x0, jax.random.key(2), self_condition=True, t=t, noise=noise)
  first, second = seen
  assert np.all(first == 0)
  ab = np.cumprod(1 - np.linspace(1e-4, 0.02, 1000))[np.asarray(t)][:, None, None, None]
  xt = np.sqrt(ab) * np.asarray(x0) + np.sqrt(1 - ab) * np.asarray(noise)
  x0_first = (xt - np.sqrt(1 - ab) * 0.3 * xt) / np.sqrt(ab)  # from eps = a x_t, x_self_cond = 0
  used = np.any(second != 0, axis=(1, 2, 3))
  assert 0.25 < used.mean() < 0.75, used.mean()
  np.testing.assert_allclose(second[used], x0_first[used], rtol=1e-4, atol=1e-4)
  assert np.all(second[~used] == 0)

  def loss_of(p):
    model = lambda x, t, x_self_cond=None: net(p, x, x_self_cond)
    return jaxdiff.loss(model, SCHED, x0, jax.random.key(2), self_condition=True, t=t, noise=noise)[0]

  def fixed_input_loss(p):  # the plain loss with the second pass's input held fixed
    return jnp.mean((net(p, jnp.asarray(xt, jnp.float32), jnp.asarray(second)) - noise) ** 2)

  def through_both_passes(p):  # what the gradient would be without the stop-gradient
    x0_p = (xt - np.sqrt(1 - ab) * p["a"] * xt) / np.sqrt(ab)
    sc = jnp.where(used[:, None, None, None], x0_p, 0.0).astype(jnp.float32)
    return jnp.mean((net(p, jnp.asarray(xt, jnp.float32), sc) - noise) ** 2)

  got, want, leaky = (jax.grad(f)(params) for f in (loss_of, fixed_input_loss, through_both_passes))
  for k in params:
    np.testing.assert_allclose(float(got[k]), float(want[k]), rtol=1e-4, atol=1e-6)
  assert abs(float(leaky["a"]) - float(want["a"])) > 0.05 * abs(float(want["a"]))


def test_loss_offset_noise_is_shared_over_the_spatial_axes():
  """offset noise: the eps target has a per-(example, channel) constant component of variance offset^2."""
  tgt = []
  jaxdiff.loss(
    lambda x, t: tgt.append(x) or jnp.zeros_like(x),
    SCHED,
    jnp.zeros((2000, 4, 4, 1)),
    jax.random.key(2),
    offset_noise=1.0,
    t=jnp.full((2000,), 999),
  )
  xt = np.asarray(tgt[0])[..., 0]
  per_img_mean = xt.mean(axis=(1, 2))
  # mean over 16 iid N(0,1) pixels has var 1/16; the shared offset adds ~1 (times 1-abar ~ 1)
  assert per_img_mean.var() > 0.8


def test_loss_rejects_bad_options():
  m = lambda x, t: x
  with pytest.raises(ValueError, match="prediction"):
    jaxdiff.loss(m, SCHED, jnp.zeros((2, 2)), jax.random.key(0), prediction="score")
  with pytest.raises(ValueError, match="loss_type"):
    jaxdiff.loss(m, SCHED, jnp.zeros((2, 2)), jax.random.key(0), loss_type="l3")
  with pytest.raises(ValueError, match="weighting"):
    jaxdiff.loss(m, SCHED, jnp.zeros((2, 2)), jax.random.key(0), weighting="snr")
