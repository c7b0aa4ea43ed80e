"""Probability-flow ODE likelihood (jaxdiff.evaluation.ode_likelihood) against closed forms: on
Gaussian data the exact model's ODE density is the Gaussian's (smoothed by the start noise), for
every process and parameterisation; Hutchinson's estimate is unbiased against the exact trace; the
bits/dim convention is score_sde's."""

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdiff import processes, schedules
from jaxdiff.diffusion import PREDICTIONS, edm_scalings, join_output
from jaxdiff.evaluation import ode_likelihood as odl

pytestmark = pytest.mark.usefixtures("fast_compiles")

D = 3
_rng = np.random.default_rng(0)
_A = _rng.standard_normal((D, D))
SIGMA = _A @ _A.T / D + 0.2 * np.eye(D)  # a full covariance: the score mixes the dimensions
MU = np.array([0.3, -0.2, 0.1])
X = _rng.multivariate_normal(MU, SIGMA, size=6).astype(np.float32)

PROCESSES = {
  "vp": lambda: processes.DiscreteVP(schedules.get_schedule("linear", 1000)),
  "vpsde": processes.VPSDE,
  "cosine": processes.CosineVP,
  "edm": processes.EDM,
  "flow": processes.RectifiedFlow,
}


def exact_model(proc, prediction, mu=MU, sigma=SIGMA, sigma_data=0.5):
  """model_fn(net_in, t) of the exact denoiser of N(mu, sigma) data under `proc`, in `prediction`'s
  parameterisation: E[eps | x_t] = s (a^2 Sigma + s^2 I)^-1 (x_t - a mu)."""
  lam, q = np.linalg.eigh(sigma)
  d = len(mu)

  def f(net_in, t):
    a, s = proc.alpha_sigma(t)
    a, s = a.reshape((-1,) + (1,) * (net_in.ndim - 1)), s.reshape((-1,) + (1,) * (net_in.ndim - 1))
    x = net_in * a / edm_scalings(s / a, sigma_data)[2] if prediction == "edm" else net_in
    flat = x.reshape(x.shape[0], d)
    z = (flat - a.reshape(-1, 1) * mu) @ q
    eps = (s.reshape(-1, 1) * ((z / (a.reshape(-1, 1) ** 2 * lam + s.reshape(-1, 1) ** 2)) @ q.T)).reshape(
      x.shape
    )
    x0 = (x - s * eps) / a
    return join_output(prediction, x0, eps, a, s, x, sigma_data)

  return f


def gauss_logpdf(x, mu, cov):
  x = np.asarray(x, np.float64).reshape(len(x), -1)
  d = x - mu
  return (
    -0.5 * np.einsum("bi,ij,bj->b", d, np.linalg.inv(cov), d) - 0.5 * np.linalg.slogdet(2 * np.pi * cov)[1]
  )


def _errors(name, prediction, **kw):
  proc = PROCESSES[name]()
  out = odl.ode_likelihood(
    exact_model(proc, prediction), proc, jnp.asarray(X), jax.random.key(0), prediction=prediction, **kw
  )
  r0, r1 = float(out.ratio_min), float(out.ratio_max)
  want = gauss_logpdf(X, MU, SIGMA + r0**2 * np.eye(D))  # the data smoothed by the start noise
  # the solver alone: the exact density of the path's end point, N(mu, Sigma + r1^2 I) in y = x / alpha
  solver = np.asarray(out.delta) + gauss_logpdf(out.end, MU, SIGMA + r1**2 * np.eye(D)) - want
  total = np.asarray(out.log_p) - want  # plus the prior's truncation (N(0, prior_std^2) at r1)
  return np.abs(solver).max(), np.abs(total).max(), out


# Every process and every parameterisation at least once (the slow test runs the whole grid).
PAIRS = [("vp", "eps"), ("vpsde", "x0"), ("cosine", "v"), ("edm", "edm"), ("flow", "flow")]


@pytest.mark.parametrize("name, prediction", PAIRS)
def test_exact_model_gives_the_closed_form_density(name, prediction):
  solver, total, out = _errors(name, prediction, exact_trace=True)
  print(
    f"{name}/{prediction}: |solver error| {solver:.1e} nats, |total error| {total:.1e} nats, {int(out.steps)} steps"
  )
  # measured 7e-5 .. 1.8e-4 nats at rtol = atol = 1e-5 (float32 floor about 4e-5 at 1e-6)
  assert solver < 5e-4, solver
  assert total < 1e-2, total  # plus the prior's truncation, O(|mu| / ratio_max): measured 4e-4 .. 4e-3


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(PROCESSES))
@pytest.mark.parametrize("prediction", PREDICTIONS)
def test_exact_model_every_process_and_prediction(name, prediction):
  solver, total, _ = _errors(name, prediction, exact_trace=True)
  assert solver < 5e-4 and total < 1e-2, (solver, total)


def test_fixed_steps_converge_to_the_adaptive_answer():
  adaptive = _errors("edm", "eps", exact_trace=True)[2].log_p
  for n, tol in ((4, 1e-1), (24, 5e-4)):
    fixed = _errors("edm", "eps", exact_trace=True, num_steps=n)[2]
    assert int(fixed.nfe) == 6 * n + 1
    assert np.abs(np.asarray(fixed.log_p - adaptive)).max() < tol


@pytest.mark.parametrize("probe", odl.PROBES)
def test_hutchinson_estimate_is_unbiased_against_the_exact_trace(probe):
  """On one fixed grid the path y(u) does not depend on the probes, so Hutchinson minus exact is
  the estimator's error alone: mean zero, nonzero spread (the score mixes dimensions)."""
  d, n = 6, 512
  rng = np.random.default_rng(1)
  a = rng.standard_normal((d, d))
  cov, mu = a @ a.T / d + 0.1 * np.eye(d), np.zeros(d)
  x = jnp.asarray(np.repeat(rng.multivariate_normal(mu, cov, size=1), n, axis=0).astype(np.float32))
  proc = processes.VPSDE()
  model = exact_model(proc, "eps", mu, cov)
  kw = dict(prediction="eps", num_steps=6)
  exact = odl.ode_likelihood(model, proc, x, jax.random.key(0), exact_trace=True, **kw).log_p
  hutch = odl.ode_likelihood(model, proc, x, jax.random.key(1), probe=probe, **kw).log_p
  diff = np.asarray(hutch - exact, np.float64)
  se = diff.std() / math.sqrt(n)
  print(f"{probe}: mean {diff.mean():.4f} nats, spread {diff.std():.4f}, standard error {se:.4f}")
  assert diff.std() > 1e-3 and abs(diff.mean()) < 4 * se
  # more probes: the same mean, a smaller spread
  four = odl.ode_likelihood(model, proc, x, jax.random.key(1), probe=probe, num_probes=4, **kw).log_p
  assert np.asarray(four - exact).std() < 0.7 * diff.std()


def test_reproducible_for_a_fixed_key_and_checked():
  proc = processes.EDM()
  model = exact_model(proc, "eps")
  run = lambda k: odl.ode_log_likelihood(model, proc, jnp.asarray(X), jax.random.key(k), prediction="eps")
  a, b, c = run(3), run(3), run(4)
  np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert np.abs(np.asarray(a - c)).max() > 0  # other probes
  with pytest.raises(ValueError, match="max_steps"):
    odl.ode_log_likelihood(model, proc, jnp.asarray(X), jax.random.key(0), prediction="eps", max_steps=2)
  with pytest.raises(ValueError, match="probe"):
    odl.ode_likelihood(model, proc, jnp.asarray(X), jax.random.key(0), prediction="eps", probe="sphere")
  with pytest.raises(ValueError, match="prediction"):
    odl.ode_likelihood(model, proc, jnp.asarray(X), jax.random.key(0), prediction="score")


def test_bits_per_dim_is_score_sdes_dequantised_convention():
  """8-bit 'images' [B, 2, 2, 1] of a Gaussian: bits/dim = -log N(y; mu, Sigma + r0^2) / (D ln 2) + 7
  at the uniformly dequantised y = (k + U) / 128 - 1."""
  d = 4
  rng = np.random.default_rng(2)
  a = rng.standard_normal((d, d))
  cov, mu = 0.05 * (a @ a.T / d) + 0.01 * np.eye(d), np.full(d, 0.1)
  k = np.clip(np.round((rng.multivariate_normal(mu, cov, 16) + 1) * 127.5), 0, 255)
  x0 = jnp.asarray((k / 127.5 - 1).reshape(16, 2, 2, 1).astype(np.float32))
  proc = processes.CosineVP()
  model = exact_model(proc, "v", mu, cov)
  key = jax.random.key(5)
  bpd = odl.ode_bits_per_dim(model, proc, x0, key, prediction="v", exact_trace=True)
  y = odl.dequantize(x0, jax.random.split(key)[0])
  yk = np.asarray(y).reshape(16, d)
  assert np.all((yk >= k / 128 - 1 - 1e-6) & (yk < (k + 1) / 128 - 1 + 1e-6))  # inside level k's bin
  r0, _ = odl.likelihood_range(proc)
  want = -gauss_logpdf(yk, mu, cov + r0**2 * np.eye(d)) / (d * math.log(2)) + 7.0
  np.testing.assert_allclose(np.asarray(bpd), want, atol=2e-3)
  with pytest.raises(ValueError, match=r"\[-1, 1\]"):
    odl.ode_bits_per_dim(model, proc, x0 * 127.5, key, prediction="v")


# ---- python -m jaxdiff.evaluation --likelihood on a workdir ---------------------------------------


def _workdir(path, config):
  """A workdir as train() writes it (config.json + a checkpoint), with random weights (no training)."""
  from jaxdiff.models import create_model
  from jaxdiff.training import Checkpointer, create_train_state, save_config

  model = create_model(config)
  abstract = jax.eval_shape(lambda: create_train_state(config, model, jax.random.key(0)))
  rng = np.random.default_rng(0)

  def draw(a):
    if not np.issubdtype(a.dtype, np.floating):
      return jax.device_put(np.zeros(a.shape, a.dtype))
    v = rng.standard_normal(a.shape) / np.sqrt(max(1, int(np.prod(a.shape[:-1]))))
    return jax.device_put((0.3 * v).astype(a.dtype))

  params = jax.tree_util.tree_map(draw, abstract.params)
  state = jax.tree_util.tree_map(lambda a: jax.device_put(np.zeros(a.shape, a.dtype)), abstract)
  state = state.replace(params=params, ema_params=params)
  ck = Checkpointer(path, async_save=False)
  ck.save(state)
  ck.close()
  save_config(config, path)
  return path


def test_cli_likelihood_of_points_is_finite_reproducible_and_written(tmp_path, capsys):
  from helpers import tiny_points_config

  from jaxdiff.errors import run_cli
  from jaxdiff.evaluation import cli

  wd = _workdir(str(tmp_path / "w"), tiny_points_config())
  argv = [
    f"--workdir={wd}",
    "--likelihood",
    "--num_examples=6",
    "--num_steps=3",
    f"--out={tmp_path / 'r.json'}",
  ]
  assert run_cli(cli.main, argv, prog=cli.PROG) == 0
  first = json.loads((tmp_path / "r.json").read_text())
  assert math.isfinite(first["ode_nll_nats"]["mean"]) and first["info"]["num_examples"] == 6
  assert first["info"]["model_evaluations_per_batch"] == [6 * 3 + 1]
  assert "ode_nll_nats" in capsys.readouterr().out
  assert run_cli(cli.main, argv, prog=cli.PROG) == 0
  assert json.loads((tmp_path / "r.json").read_text())["ode_nll_nats"] == first["ode_nll_nats"]
  with pytest.raises(SystemExit):
    cli.main(["--likelihood"])  # no --workdir: argparse's usage error (exit 2)


@pytest.mark.slow
def test_cli_likelihood_of_digits_gives_ode_and_bound_bits_per_dim(tmp_path):
  from helpers import tiny_image_config

  from jaxdiff.evaluation.cli import evaluate_likelihood

  wd = _workdir(str(tmp_path / "w"), tiny_image_config())
  kw = dict(num_examples=4, batch_size=4, num_steps=2, vlb_timesteps=4)
  a, b = evaluate_likelihood(wd, **kw), evaluate_likelihood(wd, **kw)
  assert a["ode_bits_per_dim"] == b["ode_bits_per_dim"] and a["vlb_bits_per_dim"] == b["vlb_bits_per_dim"]
  for name in ("ode_bits_per_dim", "vlb_bits_per_dim"):
    assert 0 < a[name]["mean"] < 100, a
