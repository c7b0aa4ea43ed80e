"""Schedules against closed forms computed independently in float64."""

import math

import numpy as np
import pytest

from jaxdiff import schedules


def test_linear_posterior_variance_spot_values():
  s = schedules.linear(1000)
  # DDPM linear schedule: beta~_t = beta_t (1 - abar_{t-1}) / (1 - abar_t)
  np.testing.assert_allclose(float(s.posterior_variance[487]), 0.0097916, atol=5e-7)
  np.testing.assert_allclose(float(s.posterior_variance[999]), 0.0200000, atol=5e-7)
  assert float(s.posterior_variance[0]) == 0.0


def test_fields_match_float64_recomputation():
  s = schedules.linear(1000, 1e-4, 0.02)
  b = np.linspace(1e-4, 0.02, 1000)
  ac = np.cumprod(1 - b)
  ac_prev = np.concatenate([[1.0], ac[:-1]])
  expect = {
    "betas": b,
    "alphas": 1 - b,
    "alphas_cumprod": ac,
    "alphas_cumprod_prev": ac_prev,
    "sqrt_alphas_cumprod": np.sqrt(ac),
    "sqrt_one_minus_alphas_cumprod": np.sqrt(1 - ac),
    "sqrt_recip_alphas_cumprod": 1 / np.sqrt(ac),
    "sqrt_recipm1_alphas_cumprod": np.sqrt(1 / ac - 1),
    "posterior_mean_coef1": b * np.sqrt(ac_prev) / (1 - ac),
    "posterior_mean_coef2": (1 - ac_prev) * np.sqrt(1 - b) / (1 - ac),
  }
  for name, want in expect.items():
    got = np.asarray(getattr(s, name))
    assert got.dtype == np.float32, name
    np.testing.assert_allclose(got, want, rtol=2e-6, err_msg=name)
  pv = b * (1 - ac_prev) / (1 - ac)
  np.testing.assert_allclose(
    np.asarray(s.posterior_log_variance_clipped), np.log(np.concatenate([[pv[1]], pv[1:]])), rtol=2e-6
  )
  assert s.num_timesteps == 1000


def test_cosine_closed_form():
  T, off = 1000, 0.008
  s = schedules.cosine(T)
  f = lambda t: math.cos((t / T + off) / (1 + off) * math.pi / 2) ** 2
  for t in (0, 10, 500, 900):
    np.testing.assert_allclose(float(s.alphas_cumprod[t]), f(t + 1) / f(0), rtol=1e-5)
  assert float(s.betas.max()) <= 0.999 + 1e-7
  np.testing.assert_allclose(float(s.betas[-1]), 0.999, rtol=1e-6)  # clipped at max_beta


def test_sigmoid_is_tutorial_formula():
  s = schedules.sigmoid(100, beta_start=1e-5, beta_end=5e-3)
  ramp = np.linspace(-6, 6, 100)
  want = 1 / (1 + np.exp(-ramp)) * (5e-3 - 1e-5) + 1e-5  # the S-curve tutorial's betas
  np.testing.assert_allclose(np.asarray(s.betas), want, rtol=1e-6)


def test_quadratic_and_from_betas():
  s = schedules.quadratic(10, 1e-4, 0.02)
  np.testing.assert_allclose(np.asarray(s.betas), np.linspace(0.01, math.sqrt(0.02), 10) ** 2, rtol=1e-6)
  t = schedules.from_betas([0.1, 0.2, 0.3])
  np.testing.assert_allclose(np.asarray(t.alphas_cumprod), [0.9, 0.72, 0.504], rtol=1e-6)


def test_rescale_zero_terminal_snr():
  base = schedules.linear(1000)
  z = schedules.rescale_zero_terminal_snr(base)
  sab = np.sqrt(np.asarray(z.alphas_cumprod, np.float64))
  assert sab[-1] == 0.0
  np.testing.assert_allclose(sab[0], float(base.sqrt_alphas_cumprod[0]), rtol=1e-6)
  # Lin et al.: an affine map of sqrt(abar) — check linearity against the original at two points.
  orig = np.sqrt(np.cumprod(1 - np.linspace(1e-4, 0.02, 1000)))
  want = (orig - orig[-1]) * orig[0] / (orig[0] - orig[-1])
  np.testing.assert_allclose(sab, want, atol=2e-6)
  assert float(z.betas[-1]) == 1.0
  assert np.all(np.diff(np.asarray(z.alphas_cumprod)) < 0)


@pytest.mark.parametrize(
  "make,match",
  [
    (lambda: schedules.linear(0), "T"),
    (lambda: schedules.linear(10, 0.0, 0.02), r"\(0, 1\)"),
    (lambda: schedules.linear(10, 1e-4, 1.5), r"\(0, 1\)"),
    (lambda: schedules.from_betas([0.1, float("nan")]), "NaN"),
    (lambda: schedules.from_betas([[0.1]]), "1-D"),
    (lambda: schedules.cosine(10, max_beta=1.0), "max_beta"),
    (lambda: schedules.get_schedule("exp", 10), "Unknown schedule"),
    (lambda: schedules.linear(2.5), "integer"),
  ],
)
def test_invalid_arguments(make, match):
  with pytest.raises(ValueError, match=match):
    make()


def test_schedule_is_a_pytree_usable_under_jit():
  import jax

  s = schedules.linear(50)
  leaves = jax.tree_util.tree_leaves(s)
  assert len(leaves) == 13
  total = jax.jit(lambda sc: sc.betas.sum() + sc.num_timesteps)(s)
  np.testing.assert_allclose(float(total), float(np.linspace(1e-4, 0.02, 50).sum()) + 50, rtol=1e-6)
