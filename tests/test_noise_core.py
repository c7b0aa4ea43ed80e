"""The noise-level core (docs/noise_core.md) against exact mathematics.

Data x0 ~ N(MU, SD^2) per coordinate (or a two-component Gaussian mixture in 1-D) under any process
x_t = alpha(t) x0 + sigma(t) eps has a closed-form posterior mean E[x0 | x_t], hence an exact model in
every parameterisation and an exact (single Gaussian) or float64-integrated (mixture) end point of
the probability-flow ODE. With a single Gaussian the PF ODE is linear in x, so convergence orders
are measured on the mixture, whose end point is integrated independently with scipy's DOP853.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.integrate import solve_ivp

import jaxdiff
from jaxdiff import grids, processes, samplers, schedules
from jaxdiff.diffusion import convert_prediction, to_x0_eps

MU, SD = 0.5, 0.3
MIX_W, MIX_M, MIX_S = (0.4, 0.6), (-0.7, 0.6), (0.15, 0.3)  # 1-D mixture: weights, means, stds
PREDICTIONS = ("eps", "x0", "v", "flow", "edm")
LINEAR = schedules.linear(1000)
pytestmark = pytest.mark.usefixtures("fast_compiles")  # behaviour, not speed, is tested


def _procs():
  """(id, process, a well-conditioned range of times) for every process kind."""
  return [
    ("discrete", LINEAR, (20, 900)),
    ("vpsde", processes.VPSDE(), (0.02, 0.9)),
    ("cosine_vp", processes.CosineVP(), (0.05, 0.9)),
    ("edm", processes.EDM(), (0.01, 40.0)),
    ("flow", processes.RectifiedFlow(), (0.03, 0.95)),
  ]


PROCS = _procs()
PROC_IDS = [p[0] for p in PROCS]


def _times(proc, lo, hi, n):
  if isinstance(proc, schedules.Schedule):
    return jnp.asarray(np.linspace(lo, hi, n).round(), jnp.int32)
  return jnp.asarray(np.linspace(lo, hi, n), jnp.float32)


def _col(a, x):
  """Per-example [B] (or scalar) coefficients broadcast against x [B, ...]."""
  a = jnp.asarray(a, jnp.float32)
  return a.reshape(a.shape + (1,) * (x.ndim - a.ndim))


def _alpha_sigma(proc, t, x):
  a, s = processes.as_process(proc).alpha_sigma(t)
  return _col(a, x), _col(s, x)


def _sigma_data(proc):
  return float(getattr(processes.as_process(proc), "sigma_data", 0.5))


# ---- exact models ---------------------------------------------------------------------------


def gauss_post(x, a, sg):
  """E[x0 | x_t], E[eps | x_t] for x0 ~ N(MU, SD^2) (eps in a form that stays finite as sigma -> 0)."""
  v = a * a * SD**2 + sg * sg
  return MU + a * SD**2 / v * (x - a * MU), sg * (x - a * MU) / v


def mix_post(x, a, sg):
  """The same for the mixture: per-component posteriors weighted by the responsibilities."""
  logp, x0s, epss = [], [], []
  for w, m, s in zip(MIX_W, MIX_M, MIX_S):
    v = a * a * s * s + sg * sg
    logp.append(math.log(w) - 0.5 * jnp.log(v) - 0.5 * (x - a * m) ** 2 / v)
    x0s.append(m + a * s * s / v * (x - a * m))
    epss.append(sg * (x - a * m) / v)
  r = jax.nn.softmax(jnp.stack(logp), axis=0)
  return jnp.sum(r * jnp.stack(x0s), 0), jnp.sum(r * jnp.stack(epss), 0)


def express(proc, x, a, sg, x0, eps, prediction):
  """The network output of `prediction` whose implied (x0, eps) are the given ones."""
  if prediction == "eps":
    return eps
  if prediction == "x0":
    return x0
  if prediction == "v":
    return a * eps - sg * x0
  if prediction == "flow":
    return eps - x0
  sd = _sigma_data(proc)
  st = sg / a
  c_skip = sd**2 / (st**2 + sd**2)
  c_out = st * sd / jnp.sqrt(st**2 + sd**2)
  return (x0 - c_skip * x / a) / c_out


def exact_model(proc, prediction="eps", post=gauss_post):
  """model_fn(x, t) of the exact denoiser; with "edm" it receives c_in x~ and returns F."""

  def fn(x, t):
    a, sg = _alpha_sigma(proc, t, x)
    if prediction == "edm":
      c_in = 1.0 / jnp.sqrt((sg / a) ** 2 + _sigma_data(proc) ** 2)
      x = a * x / c_in  # back from the preconditioned input c_in x~ to x_t
    x0, eps = post(x, a, sg)
    return express(proc, x, a, sg, x0, eps, prediction)

  return fn


def gauss_endpoint(x_init, a0, s0):
  """PF-ODE end point for the single Gaussian: (x - a MU)/sqrt(a^2 SD^2 + sigma^2) is invariant."""
  return MU + SD * (np.asarray(x_init, np.float64) - a0 * MU) / np.sqrt(a0**2 * SD**2 + s0**2)


def _np_mix_eps(x, st):
  """E[eps | x~] for the mixture at sigma/alpha = st (alpha = 1 coordinates), float64."""
  x = np.asarray(x)[:, None]
  m, s, w = np.array(MIX_M), np.array(MIX_S), np.array(MIX_W)
  v = s**2 + st**2
  logp = np.log(w) - 0.5 * np.log(v) - 0.5 * (x - m) ** 2 / v
  r = np.exp(logp - logp.max(1, keepdims=True))
  r /= r.sum(1, keepdims=True)
  return (r * st * (x - m) / v).sum(1)


def mix_endpoint_sigma(x_tilde, s0):
  """The mixture's PF-ODE d x~ / d s = E[eps | x~, s] from s0 to 0, float64 DOP853."""
  sol = solve_ivp(
    lambda s, y: _np_mix_eps(y, s),
    (s0, 0.0),
    np.asarray(x_tilde, np.float64),
    "DOP853",
    rtol=1e-11,
    atol=1e-12,
  )
  return sol.y[:, -1]


def mix_endpoint_flow(x1):
  """Rectified flow from t = 1: dx/dt = E[eps - x0 | x_t], alpha = 1 - t, sigma = t."""

  def vel(t, y):
    a, sg = 1.0 - t, t
    x = y[:, None]
    m, s, w = np.array(MIX_M), np.array(MIX_S), np.array(MIX_W)
    v = a * a * s * s + sg * sg
    logp = np.log(w) - 0.5 * np.log(v) - 0.5 * (x - a * m) ** 2 / v
    r = np.exp(logp - logp.max(1, keepdims=True))
    r /= r.sum(1, keepdims=True)
    x0 = (r * (m + a * s * s / v * (x - a * m))).sum(1)
    eps = (r * sg * (x - a * m) / v).sum(1)
    return eps - x0

  sol = solve_ivp(vel, (1.0, 0.0), np.asarray(x1, np.float64), "DOP853", rtol=1e-11, atol=1e-12)
  return sol.y[:, -1]


def _rms(a, b):
  return float(np.sqrt(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2)))


def _maxerr(a, b):
  return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


# ---- 1. processes -------------------------------------------------------------------------


def _closed_alpha_sigma(name, t):
  t = np.asarray(t, np.float64)
  if name == "discrete":
    ac = np.cumprod(1 - np.linspace(1e-4, 0.02, 1000))[t.astype(int)]
    return np.sqrt(ac), np.sqrt(1 - ac)
  if name == "vpsde":
    log_ab = -(0.1 * t + (20.0 - 0.1) * t**2 / 2)
    return np.exp(0.5 * log_ab), np.sqrt(-np.expm1(log_ab))
  if name == "cosine_vp":
    # simple diffusion's logsnr_schedule_cosine: t mapped linearly onto [t_lo, t_hi], whose ends are +-15
    t_lo, t_hi = (2 / np.pi * np.arctan(np.exp(-0.5 * lm)) for lm in (15.0, -15.0))
    lsnr = -2 * np.log(np.tan(np.pi * (t_lo + t * (t_hi - t_lo)) / 2))
    return np.sqrt(1 / (1 + np.exp(-lsnr))), np.sqrt(1 / (1 + np.exp(lsnr)))
  if name == "edm":
    return np.ones_like(t), t
  return 1 - t, t


@pytest.mark.parametrize("name,proc,rng", PROCS, ids=PROC_IDS)
def test_alpha_sigma_closed_forms_and_time_at_inverts(name, proc, rng):
  t = _times(proc, *rng, 37)
  a, s = processes.as_process(proc).alpha_sigma(t)
  wa, ws = _closed_alpha_sigma(name, t)
  np.testing.assert_allclose(np.asarray(a), wa, rtol=2e-5, atol=1e-7)
  np.testing.assert_allclose(np.asarray(s), ws, rtol=2e-5, atol=1e-7)
  back = processes.as_process(proc).time_at(jnp.asarray(ws / wa, jnp.float32))
  tol = 2e-3 if name == "discrete" else 1e-4
  np.testing.assert_allclose(np.asarray(back, np.float64), np.asarray(t, np.float64), rtol=tol, atol=tol)


def test_discrete_integer_time_is_the_table():
  p = processes.as_process(LINEAR)
  ti = jnp.arange(1000, dtype=jnp.int32)
  a, s = p.alpha_sigma(ti)
  np.testing.assert_allclose(np.asarray(a), np.asarray(LINEAR.sqrt_alphas_cumprod), rtol=1e-6)
  np.testing.assert_allclose(np.asarray(s), np.asarray(LINEAR.sqrt_one_minus_alphas_cumprod), rtol=1e-6)
  a2, s2 = p.alpha_sigma(ti.astype(jnp.float32))  # an integer-valued float time is the table entry too
  np.testing.assert_allclose(np.asarray(a2), np.asarray(a), rtol=1e-6)
  np.testing.assert_allclose(np.asarray(s2), np.asarray(s), rtol=1e-6)


def test_discrete_float_time_interpolates_in_log_ratio():
  p = processes.as_process(LINEAR)
  ac = np.cumprod(1 - np.linspace(1e-4, 0.02, 1000))
  lr = 0.5 * np.log((1 - ac) / ac)  # log(sigma / alpha) per integer timestep
  for tf in (500.5, 100.25, 998.9, 0.75):
    lo, f = int(np.floor(tf)), tf - np.floor(tf)
    r = np.exp((1 - f) * lr[lo] + f * lr[lo + 1])
    a, s = p.alpha_sigma(jnp.asarray([tf], jnp.float32))
    np.testing.assert_allclose(float(a[0]), 1 / np.sqrt(1 + r * r), rtol=2e-5, err_msg=str(tf))
    np.testing.assert_allclose(float(s[0]), r / np.sqrt(1 + r * r), rtol=2e-5, err_msg=str(tf))


def test_schedule_is_accepted_wherever_a_process_is():
  dvp = processes.as_process(LINEAR)
  x_init = jax.random.normal(jax.random.key(0), (16, 2))
  kw = dict(sampler="dpmpp_2m", num_steps=12, x_init=x_init)
  a = jaxdiff.sample(exact_model(LINEAR), LINEAR, (16, 2), jax.random.key(1), **kw)
  b = jaxdiff.sample(exact_model(LINEAR), dvp, (16, 2), jax.random.key(1), **kw)
  np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-6)
  t = jnp.arange(0, 1000, 100)
  xt = jnp.linspace(-1, 1, 10)[:, None]
  out = jnp.full_like(xt, 0.3)
  np.testing.assert_allclose(
    np.asarray(convert_prediction(LINEAR, xt, t, out, "eps", "v")),
    np.asarray(convert_prediction(dvp, xt, t, out, "eps", "v")),
    rtol=1e-6,
  )
  la, _ = jaxdiff.loss(exact_model(LINEAR), LINEAR, jnp.zeros((8, 2)), jax.random.key(2))
  lb, _ = jaxdiff.loss(exact_model(LINEAR), dvp, jnp.zeros((8, 2)), jax.random.key(2))
  np.testing.assert_allclose(float(la), float(lb), rtol=1e-6)


# ---- 2. conversions -----------------------------------------------------------------------


@pytest.mark.parametrize("name,proc,rng", PROCS, ids=PROC_IDS)
def test_conversions_round_trip_and_recover_exact_x0_eps(name, proc, rng):
  n = 64
  t = _times(proc, *rng, n)
  k1, k2 = jax.random.split(jax.random.key(0))
  x0 = MU + SD * jax.random.normal(k1, (n, 3))
  a, sg = _alpha_sigma(proc, t, x0)
  xt = a * x0 + sg * jax.random.normal(k2, (n, 3))
  px0, peps = gauss_post(xt, a, sg)
  outs = {p: express(proc, xt, a, sg, px0, peps, p) for p in PREDICTIONS}
  for src in PREDICTIONS:
    gx0, geps = to_x0_eps(proc, xt, t, outs[src], src)
    np.testing.assert_allclose(np.asarray(gx0), np.asarray(px0), rtol=1e-4, atol=2e-5, err_msg=src)
    np.testing.assert_allclose(np.asarray(geps), np.asarray(peps), rtol=1e-4, atol=2e-5, err_msg=src)
    for dst in PREDICTIONS:
      there = convert_prediction(proc, xt, t, outs[src], src, dst)
      np.testing.assert_allclose(
        np.asarray(there), np.asarray(outs[dst]), rtol=1e-4, atol=2e-5, err_msg=f"{src}->{dst}"
      )
      back = convert_prediction(proc, xt, t, there, dst, src)
      np.testing.assert_allclose(
        np.asarray(back), np.asarray(outs[src]), rtol=3e-5, atol=1e-5, err_msg=f"{src}->{dst}->{src}"
      )


# ---- 3. grids -----------------------------------------------------------------------------


@pytest.mark.parametrize(
  "n,smin,smax,rho", [(10, 0.002, 80.0, 7.0), (33, 0.03, 14.6, 5.0), (2, 0.1, 10.0, 7.0)]
)
def test_karras_grid_closed_form(n, smin, smax, rho):
  g = np.asarray(grids.karras(n, smin, smax, rho), np.float64)
  i = np.arange(n)
  want = (smax ** (1 / rho) + i / (n - 1) * (smin ** (1 / rho) - smax ** (1 / rho))) ** rho
  assert g.shape == (n,)
  np.testing.assert_allclose(g, want, rtol=1e-5)
  assert np.all(np.diff(g) < 0)
  np.testing.assert_allclose([g[0], g[-1]], [smax, smin], rtol=1e-5)


def test_flow_grid_matches_diffusers_formula():
  for n in (5, 28):
    np.testing.assert_allclose(np.asarray(grids.flow(n, 1.0)), np.linspace(1.0, 1e-3, n), rtol=1e-5)
    # diffusers' FlowMatchEulerDiscreteScheduler(shift=3).set_timesteps(n) (checked against 0.42):
    # linspace between the shifted training ends, then shifted again.
    shift = 3.0
    sh = lambda s: shift * s / (1 + (shift - 1) * s)  # noqa: E731
    lin = np.linspace(1.0, sh(1e-3), n)
    np.testing.assert_allclose(np.asarray(grids.flow(n, shift=shift)), sh(lin), rtol=1e-5)


@pytest.mark.parametrize("name,proc,rng", PROCS[1:4], ids=PROC_IDS[1:4])
def test_uniform_and_log_snr_grids(name, proc, rng):
  n = 17
  u = np.asarray(grids.uniform(proc, n), np.float64)
  ls = np.asarray(grids.log_snr(proc, n), np.float64)
  for g in (u, ls):
    assert g.shape == (n,) and np.all(np.diff(g) < 0), g
  np.testing.assert_allclose([u[0], u[-1]], [ls[0], ls[-1]], rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(np.diff(u), np.full(n - 1, (u[-1] - u[0]) / (n - 1)), rtol=1e-4, atol=1e-6)
  a, s = processes.as_process(proc).alpha_sigma(jnp.asarray(ls, jnp.float32))
  lsnr = 2 * np.log(np.asarray(a, np.float64) / np.asarray(s, np.float64))
  np.testing.assert_allclose(np.diff(lsnr), np.full(n - 1, (lsnr[-1] - lsnr[0]) / (n - 1)), rtol=1e-3)
  if name == "vpsde":
    np.testing.assert_allclose([u[0], u[-1]], [1.0, 1e-3], rtol=1e-5)
  if name == "edm":
    np.testing.assert_allclose([u[0], u[-1]], [80.0, 0.002], rtol=1e-5)
  if name == "cosine_vp":
    np.testing.assert_allclose([u[0], u[-1]], [1.0, 0.0], atol=1e-7)
    np.testing.assert_allclose([lsnr[0], lsnr[-1]], [-15.0, 15.0], rtol=1e-4)


@pytest.mark.parametrize("prediction", ["x0", "eps"])
def test_uniform_grid_of_rectified_flow_samples_finite(prediction):
  """grids.uniform is "a uniform-t grid for any process": sampling on it must not evaluate a
  parameterisation where it is undefined (RectifiedFlow's t_min = 0 is sigma = 0)."""
  rf = processes.RectifiedFlow()
  z = jax.random.normal(jax.random.key(2), (8, 1))
  ts = grids.uniform(rf, 10)
  y = jaxdiff.sample(
    exact_model(rf, prediction), rf, (8, 1), jax.random.key(0), sampler="heun", num_steps=10, ts=ts,
    prediction=prediction, x_init=z,
  )  # fmt: skip
  assert np.all(np.isfinite(np.asarray(y))), (ts, np.asarray(y)[:, 0])
  assert _maxerr(y, gauss_endpoint(z, 0.0, 1.0)) < 0.05


def test_grids_accept_a_schedule_as_its_discrete_chain():
  dvp = processes.as_process(LINEAR)
  for f in (
    lambda p: grids.uniform(p, 7),
    lambda p: grids.log_snr(p, 7),
    lambda p: grids.to_times(p, [30.0, 1.0]),
  ):
    np.testing.assert_allclose(np.asarray(f(LINEAR)), np.asarray(f(dvp)), rtol=1e-6)


def _interp_alpha_sigma(t):
  """alpha, sigma of linear(1000) at float timesteps, interpolated in log(sigma/alpha) (float64)."""
  ac = np.cumprod(1 - np.linspace(1e-4, 0.02, 1000))
  lr = 0.5 * np.log((1 - ac) / ac)
  t = np.asarray(t, np.float64)
  lo = np.minimum(np.floor(t).astype(int), 998)
  r = np.exp((1 - (t - lo)) * lr[lo] + (t - lo) * lr[lo + 1])
  return 1 / np.sqrt(1 + r * r), r / np.sqrt(1 + r * r)


@pytest.mark.parametrize("sampler", ["dpmpp_2m", "heun"])
def test_discrete_chain_on_a_float_grid(sampler):
  """A log-SNR grid on a chain has fractional timesteps: the model gets float32 t, levels are
  interpolated, and the sample lands on the exact end point from the interpolated top level."""
  dtypes = []
  exact = exact_model(LINEAR)

  def model(x, t):
    dtypes.append(t.dtype)
    return exact(x, t)

  ts = grids.log_snr(processes.as_process(LINEAR), 25)
  z = jax.random.normal(jax.random.key(4), (64, 1))
  x = jaxdiff.sample(
    model, LINEAR, (64, 1), jax.random.key(0), sampler=sampler, num_steps=25, ts=ts, x_init=z
  )
  a0, s0 = _interp_alpha_sigma(ts[0])
  err = _maxerr(x, gauss_endpoint(z, a0, s0))
  print(f"linear(1000) log-SNR grid (25) {sampler} max err {err:.2e}")
  assert set(dtypes) == {jnp.dtype(jnp.float32)}, dtypes
  assert err < 0.02, err
  dtypes.clear()
  jaxdiff.sample(
    model, LINEAR, (64, 1), jax.random.key(0), sampler=sampler, num_steps=25
  )  # leading: integers
  assert set(dtypes) == {jnp.dtype(jnp.int32)}, dtypes


def test_spacing_and_to_times():
  for kind in ("leading", "trailing", "linspace"):
    np.testing.assert_array_equal(
      np.asarray(grids.spacing(1000, 20, kind)), samplers.timesteps(1000, 20, kind)
    )
  k = grids.karras(9, 0.002, 80.0)
  np.testing.assert_allclose(np.asarray(grids.to_times(processes.EDM(), k)), np.asarray(k), rtol=1e-6)
  tf = np.asarray(grids.to_times(processes.RectifiedFlow(), k), np.float64)
  np.testing.assert_allclose(tf, np.asarray(k) / (1 + np.asarray(k)), rtol=1e-5)


# ---- 4. convergence orders on the mixture -------------------------------------------------

N_CONV = 256
FIGURES = {}  # measured errors, printed with -s


_CONV_CACHE = {}


def _conv_errors(proc, sampler, steps, grid, x_init, ref, prediction="x0", **kw):
  model = exact_model(proc, prediction, mix_post)
  errs = []
  for n in steps:
    key = (type(proc).__name__, sampler, n, prediction, tuple(sorted(kw.items())))
    if key in _CONV_CACHE:
      errs.append(_CONV_CACHE[key])
      continue
    x = jaxdiff.sample(
      model,
      proc,
      (N_CONV, 1),
      jax.random.key(0),
      sampler=sampler,
      num_steps=n,
      ts=grid(n),
      prediction=prediction,
      x_init=x_init,
      **kw,
    )
    errs.append(_rms(np.asarray(x)[:, 0], ref))
    _CONV_CACHE[key] = errs[-1]
  errs = np.array(errs)
  FIGURES[(type(proc).__name__, sampler)] = (steps, errs)
  print(f"{type(proc).__name__} {sampler} steps {steps} rms err {errs} ratios {errs[:-1] / errs[1:]}")
  return errs, errs[:-1] / errs[1:]


@pytest.fixture(scope="module")
def edm_case():
  z = jax.random.normal(jax.random.key(1), (N_CONV, 1))
  x_init = 80.0 * z
  return x_init, mix_endpoint_sigma(np.asarray(x_init)[:, 0], 80.0)


def _karras(n):
  return grids.karras(n, 0.002, 80.0)


@pytest.mark.parametrize(
  "sampler,steps,lo,hi",
  [
    ("euler", (32, 64, 128), 1.6, 2.5),
    ("heun", (16, 32, 64), 3.0, 6.0),
    ("dpmpp_2m", (32, 64, 128), 3.0, 6.0),
  ],
)
def test_edm_karras_convergence_orders(edm_case, sampler, steps, lo, hi):
  x_init, ref = edm_case
  errs, ratios = _conv_errors(processes.EDM(), sampler, steps, _karras, x_init, ref)
  assert np.all(ratios > lo) and np.all(ratios < hi), (errs, ratios)


@pytest.mark.parametrize("sampler,kw", [("dpmpp_3m", {}), ("unipc", {"order": 3}), ("unipc", {"order": 2})])
def test_edm_karras_higher_order_at_least_as_fast_as_dpmpp_2m(edm_case, sampler, kw):
  x_init, ref = edm_case
  steps = (32, 64)
  e2, _ = _conv_errors(processes.EDM(), "dpmpp_2m", steps, _karras, x_init, ref)
  e3, r3 = _conv_errors(processes.EDM(), sampler, steps, _karras, x_init, ref, **kw)
  assert np.all(r3 > 3.0), (e3, r3)
  assert np.all(e3 <= 1.05 * e2), (sampler, kw, e3, e2)


def test_edm_preconditioned_model_converges_to_the_gaussian_end_point():
  """prediction="edm" (F with c_in / c_skip / c_out): heun lands on the closed-form end point."""
  z = jax.random.normal(jax.random.key(3), (64, 2))
  proc = processes.EDM()
  errs = []
  for n in (16, 32):
    x = jaxdiff.sample(
      exact_model(proc, "edm"),
      proc,
      (64, 2),
      jax.random.key(0),
      sampler="heun",
      num_steps=n,
      ts=_karras(n),
      prediction="edm",
      x_init=80.0 * z,
    )
    errs.append(_maxerr(x, gauss_endpoint(80.0 * z, 1.0, 80.0)))
  print("EDM heun gaussian prediction=edm max err", errs)
  assert errs[1] < 0.03 and errs[0] / errs[1] > 3.0, errs  # float64 Heun: 0.059, 0.0128 (other z)


@pytest.mark.parametrize(
  "sampler,steps,lo,hi", [("euler", (16, 32, 64), 1.6, 2.5), ("heun", (8, 16, 32), 3.0, 6.0)]
)
def test_rectified_flow_convergence_orders(sampler, steps, lo, hi):
  z = jax.random.normal(jax.random.key(1), (N_CONV, 1))
  ref = mix_endpoint_flow(np.asarray(z)[:, 0])
  proc = processes.RectifiedFlow()
  errs, ratios = _conv_errors(proc, sampler, steps, lambda n: grids.flow(n, 1.0), z, ref, prediction="flow")
  assert np.all(ratios > lo) and np.all(ratios < hi), (errs, ratios)


@pytest.mark.parametrize(
  "sampler,steps,lo,hi",
  [("ddim", (16, 32, 64), 1.6, 2.5), ("euler", (16, 32, 64), 1.6, 2.5), ("heun", (8, 16, 32), 3.0, 6.0)],
)
def test_vpsde_uniform_grid_convergence_orders(sampler, steps, lo, hi):
  proc = processes.VPSDE()
  z = jax.random.normal(jax.random.key(1), (N_CONV, 1))
  a1, s1 = _closed_alpha_sigma("vpsde", 1.0)
  ref = mix_endpoint_sigma(np.asarray(z)[:, 0] / a1, s1 / a1)
  grid = lambda n: np.linspace(1.0, 1e-3, n)  # noqa: E731
  errs, ratios = _conv_errors(proc, sampler, steps, grid, z, ref, prediction="eps")
  assert np.all(ratios > lo) and np.all(ratios < hi), (errs, ratios)


# ---- 5. defects of the samplers and the loss, each reproduced ------------------------------

HIGHER_ORDER = ("heun", "dpmpp_2m", "dpmpp_3m", "unipc")


def _discrete_endpoint_errors(sched, n, prediction, x_init):
  """Max error to the exact PF end point of every deterministic sampler on `trailing` levels.

  "ddim" is DDIM with diffusers' stride t -> t - T // n; "ddim_same_levels" is DDIM on exactly the
  levels the other samplers visit (ts=), which Euler must equal.
  """
  ts = samplers.timesteps(sched.num_timesteps, n, "trailing")
  ac = float(np.asarray(sched.alphas_cumprod, np.float64)[ts[0]])
  want = gauss_endpoint(x_init, math.sqrt(ac), math.sqrt(1 - ac))
  runs = {s: dict(sampler=s, spacing="trailing") for s in ("ddim", "euler") + HIGHER_ORDER}
  runs["ddim_same_levels"] = dict(sampler="ddim", ts=ts)
  out, xs = {}, {}
  for label, kw in runs.items():
    x = jaxdiff.sample(
      exact_model(sched, prediction), sched, x_init.shape, jax.random.key(0), num_steps=n, prediction=prediction,
      x_init=x_init, **kw,
    )  # fmt: skip
    xs[label] = x = np.asarray(x)
    assert np.all(np.isfinite(x)), label
    out[label] = _maxerr(x, want)
  np.testing.assert_allclose(xs["euler"], xs["ddim_same_levels"], atol=1e-3)  # Euler is DDIM on any process
  return out


def _assert_as_close_as_ddim(e):
  for s in HIGHER_ORDER:
    assert e[s] <= e["ddim"], (s, e)
  # Euler equals DDIM on the same levels; DDIM's stride lands on slightly different ones
  assert e["euler"] <= 1.1 * e["ddim"], e


@pytest.mark.parametrize("n", [20, 40])
def test_heun_on_cosine_trailing_as_close_as_ddim(n):
  x_init = jax.random.normal(jax.random.key(0), (256, 1))
  e = _discrete_endpoint_errors(schedules.cosine(1000), n, "eps", x_init)
  print(f"cosine(1000) trailing n={n} max err", e)
  _assert_as_close_as_ddim(e)


def test_zero_terminal_snr_finite_and_as_close_as_ddim():
  sched = schedules.rescale_zero_terminal_snr(schedules.linear(1000))
  x_init = jax.random.normal(jax.random.key(0), (256, 1))
  e = _discrete_endpoint_errors(sched, 30, "v", x_init)
  print("zero-terminal-SNR linear(1000) trailing n=30 v max err", e)
  _assert_as_close_as_ddim(e)
  for s in ("euler_ancestral", "ddpm", "dpmpp_2m_sde"):
    x = jaxdiff.sample(
      exact_model(sched, "v"), sched, (256, 1), jax.random.key(1), sampler=s, num_steps=30, spacing="trailing",
      prediction="v", x_init=x_init,
    )  # fmt: skip
    m, sd = float(x.mean()), float(x.std())
    print(f"zero-terminal-SNR {s} n=30 mean {m:.4f} std {sd:.4f}")
    assert np.all(np.isfinite(np.asarray(x))), s
    assert abs(m - MU) < 0.08 and 0.15 < sd < 0.45, (s, m, sd)


def _two_headed(p, x, t):
  """mean channels p["wm"] x + p["bm"], variance channels p["bv"] (learned_range's v in [-1, 1])."""
  return jnp.concatenate([p["wm"] * x + p["bm"], jnp.zeros_like(x) + p["bv"]], axis=-1)


def test_learned_variance_gets_gradient_and_vlb_stops_mean_gradient():
  x0 = MU + SD * jax.random.normal(jax.random.key(0), (64, 3))
  p = {"wm": jnp.float32(0.2), "bm": jnp.float32(0.1), "bv": jnp.float32(0.3)}

  def grad_of(**kw):
    return jax.grad(
      lambda q: jaxdiff.loss(jaxdiff.bind(_two_headed, q), LINEAR, x0, jax.random.key(1), **kw)[0]
    )

  # one compiled program for the four gradients: default weight, 0, 0.001, 0.01
  g_default, g0, g1, g10 = jax.jit(
    lambda q: [grad_of()(q)] + [grad_of(vlb_weight=w)(q) for w in (0.0, 0.001, 0.01)]
  )(p)
  assert float(jnp.abs(g_default["bv"])) > 0.0 and float(jnp.abs(g1["bv"])) > 0.0, g_default
  np.testing.assert_allclose(float(g_default["bv"]), float(g1["bv"]), rtol=1e-6)  # default is 0.001
  assert float(g0["bv"]) == 0.0
  for k in ("wm", "bm"):  # the vlb term sees the mean through a stop-gradient
    np.testing.assert_allclose(float(g1[k]), float(g0[k]), rtol=1e-6, atol=1e-9, err_msg=k)
  np.testing.assert_allclose(float(g10["bv"]), 10 * float(g1["bv"]), rtol=1e-4)  # the term scales with it


def test_learned_variance_optimum_is_the_exact_reverse_variance():
  """With the exact mean, E KL(q(x_{t-1} | x_t, x0) || N(mu_theta, S)) is least at
  S* = beta~_t + coef1_t^2 Var(x0 | x_t): the hybrid loss's variance channel must find it."""
  b, d = 8192, 4
  k1, k2 = jax.random.split(jax.random.key(6))
  x0 = MU + SD * jax.random.normal(k1, (b, d))
  noise = jax.random.normal(k2, (b, d))
  t = jnp.where(jnp.arange(b) % 2 == 0, 50, 300).astype(jnp.int32)

  def apply(v, x, tt):  # exact eps in the mean channels, v[0] / v[1] as the variance at t = 50 / 300
    a, sg = _alpha_sigma(LINEAR, tt, x)
    var = jnp.where(tt[:, None] == 50, v[0], v[1]) * jnp.ones_like(x)
    return jnp.concatenate([gauss_post(x, a, sg)[1], var], axis=-1)

  grad = jax.jit(
    jax.grad(
      lambda v: jaxdiff.loss(
        jaxdiff.bind(apply, v), LINEAR, x0, jax.random.key(0), t=t, noise=noise, vlb_weight=1.0
      )[0]
    )
  )
  lo, hi = -np.ones(2), np.ones(2)
  assert np.all(np.asarray(grad(jnp.asarray(lo, jnp.float32))) < 0) and np.all(
    np.asarray(grad(jnp.asarray(hi, jnp.float32))) > 0
  )
  for _ in range(16):  # bisection on the (monotone) derivative, both timesteps at once
    mid = 0.5 * (lo + hi)
    g = np.asarray(grad(jnp.asarray(mid, jnp.float32)))
    lo, hi = np.where(g < 0, mid, lo), np.where(g < 0, hi, mid)
  betas = np.linspace(1e-4, 0.02, 1000)
  ac = np.cumprod(1 - betas)
  acp = np.append(1.0, ac[:-1])
  want = []
  for tt in (50, 300):
    bt = betas[tt] * (1 - acp[tt]) / (1 - ac[tt])  # beta~
    c1 = betas[tt] * np.sqrt(acp[tt]) / (1 - ac[tt])
    pv = SD**2 * (1 - ac[tt]) / (ac[tt] * SD**2 + 1 - ac[tt])
    frac = (np.log(bt + c1 * c1 * pv) - np.log(bt)) / (np.log(betas[tt]) - np.log(bt))
    want.append(2 * frac - 1)
  print("learned-range v at the vlb optimum (t = 50, 300):", 0.5 * (lo + hi), "exact", want)
  np.testing.assert_allclose(0.5 * (lo + hi), want, atol=0.04)


def test_float_t_in_loss_is_interpolated_or_refused():
  seen = {}

  def model(x, t):
    seen["x"], seen["t"] = x, t
    return jnp.zeros_like(x)

  t = jnp.asarray([500.5, 100.25, 0.75, 998.5], jnp.float32)
  x0 = jnp.full((4, 1), 0.5)
  noise = jnp.ones((4, 1))
  try:
    jaxdiff.loss(model, LINEAR, x0, jax.random.key(0), t=t, noise=noise)
  except (ValueError, TypeError) as e:
    assert "t" in str(e)  # refused, with a message
    return
  ac = np.cumprod(1 - np.linspace(1e-4, 0.02, 1000))
  lr = 0.5 * np.log((1 - ac) / ac)
  lo = np.floor(np.asarray(t, np.float64)).astype(int)
  f = np.asarray(t, np.float64) - lo
  r = np.exp((1 - f) * lr[lo] + f * lr[lo + 1])
  a, s = 1 / np.sqrt(1 + r * r), r / np.sqrt(1 + r * r)
  np.testing.assert_allclose(np.asarray(seen["x"])[:, 0], a * 0.5 + s, rtol=2e-5)
  np.testing.assert_allclose(np.asarray(seen["t"], np.float64), np.asarray(t), rtol=1e-7)


@pytest.mark.parametrize("sampler,option", [("ddim", "s_churn"), ("dpmpp_2m", "eta"), ("heun", "variance")])
def test_unused_options_are_errors(sampler, option):
  value = {"s_churn": 1.0, "eta": 0.5, "variance": "fixed_large"}[option]
  with pytest.raises(ValueError, match=option) as info:
    jaxdiff.sample(exact_model(LINEAR), LINEAR, (2, 1), jax.random.key(0), sampler=sampler, **{option: value})
  assert sampler in str(info.value), str(info.value)


def test_user_grids_via_ts():
  z = jax.random.normal(jax.random.key(2), (128, 1))
  edm = processes.EDM()
  ks = grids.karras(32, 0.002, 80.0)
  run = lambda *a, **kw: np.asarray(
    jaxdiff.sample(*a, (128, 1), jax.random.key(0), x_init=kw.pop("x_init"), **kw)
  )  # noqa: E731
  x = run(exact_model(edm), edm, sampler="heun", num_steps=32, ts=ks, x_init=80.0 * z)
  err_edm = _maxerr(x, gauss_endpoint(80.0 * z, 1.0, 80.0))
  default = run(exact_model(edm), edm, sampler="heun", num_steps=32, x_init=80.0 * z)
  np.testing.assert_allclose(default, x, rtol=1e-5, atol=1e-5)  # EDM's default grid is karras
  rf = processes.RectifiedFlow()
  kw = dict(num_steps=40, prediction="flow", x_init=z)
  y_heun = run(exact_model(rf, "flow"), rf, sampler="heun", ts=grids.flow(40, shift=3.0), **kw)
  y3 = run(exact_model(rf, "flow"), rf, sampler="euler", ts=grids.flow(40, shift=3.0), **kw)
  y1 = run(exact_model(rf, "flow"), rf, sampler="euler", ts=grids.flow(40, shift=1.0), **kw)
  want = gauss_endpoint(z, 0.0, 1.0)
  err = {"edm heun karras(32)": err_edm}
  err.update(
    {
      f"flow {k} flow(40, {sh})": _maxerr(v, want)
      for k, sh, v in (("heun", 3, y_heun), ("euler", 3, y3), ("euler", 1, y1))
    }
  )
  print("ts= user grids, max err", err)
  # float64 Heun/Euler in the same frames: 0.0128 (other z), 0.00147, 0.084, 0.038
  assert err_edm < 0.03 and err["flow heun flow(40, 3)"] < 5e-3, err
  assert err["flow euler flow(40, 3)"] < 0.12 and err["flow euler flow(40, 1)"] < 0.06, err
  assert not np.allclose(y3, y1, atol=1e-3)  # the grid is honoured


def exact_chain_moments(sampler, alphas, sigmas, prior_std):
  """Mean and std of a stochastic sampler's output with the exact Gaussian model, in float64.

  With a single Gaussian, x0_hat = k x + c is affine, so every step is an affine map of (x, the
  previous x0_hat) plus Gaussian noise: the moments propagate exactly through the discrete chain
  (levels alphas/sigmas, then the clean end). Written from the samplers' papers, not the library.
  """
  a_all, s_all = np.append(alphas, 1.0), np.append(sigmas, 0.0)
  mean, cov = np.zeros(2), np.diag([prior_std**2, 0.0])
  n, lam_prev = len(alphas), 0.0
  for i in range(n):
    a, s, an, sn = a_all[i], s_all[i], a_all[i + 1], s_all[i + 1]
    k = a * SD**2 / (a * a * SD**2 + s * s)
    c = MU * (1 - k * a)  # x0_hat = k x + c
    p, q, b, ns = k, 0.0, c, 0.0  # the clean end: x' = x0_hat
    if i < n - 1 and sampler == "euler_ancestral":
      r, rn = s / a, sn / an
      up = min(rn, math.sqrt(rn * rn * (r * r - rn * rn) / (r * r)))
      down = math.sqrt(rn * rn - up * up)
      # x' = an (x0_hat + down eps_hat + up z), eps_hat = (x - a x0_hat) / s
      p, b, ns = an * (k + down * (1 - a * k) / s), an * (c - down * a * c / s), an * up
    elif sampler == "ddpm":  # posterior q(x_s | x_t, x0_hat) between the levels
      ratio = a / an
      var_step = s * s - (ratio * sn) ** 2
      c_x0, c_x = an * var_step / (s * s), ratio * sn * sn / (s * s)
      p, b = c_x0 * k + c_x, c_x0 * c
      ns = 0.0 if i == n - 1 else math.sqrt(var_step * sn * sn / (s * s))
    elif i < n - 1 and sampler == "dpmpp_2m_sde":  # midpoint
      lam, lam_n = math.log(a / s), math.log(an / sn)
      h = lam_n - lam
      emh = math.exp(-h)
      # first order on the first step and where the log-SNR gap is over 2.5 times the last one
      g = 0.0 if i == 0 or h > 2.5 * (lam - lam_prev) else 0.5 * an * (1 - emh * emh) * h / (lam - lam_prev)
      p, q = (sn / s) * emh + (an * (1 - emh * emh) + g) * k, -g
      b, ns = (an * (1 - emh * emh) + g) * c, sn * math.sqrt(1 - emh * emh)
    lam_prev = math.log(a / s)
    m = np.array([[p, q], [k, 0.0]])
    mean = m @ mean + np.array([b, c])
    cov = m @ cov @ m.T + np.diag([ns * ns, 0.0])
  return mean[0], math.sqrt(cov[0, 0])


def _levels(name, n):
  """(model times, alpha, sigma, prior std) of the grids the moments test runs on."""
  if name == "discrete":
    ts = samplers.timesteps(1000, n, "leading")
    a, s = _closed_alpha_sigma("discrete", ts)
    return None, a, s, 1.0
  if name == "edm":
    ts = grids.karras(n, 0.002, 80.0)
    return ts, np.ones(n), ts, 80.0
  ts = np.linspace(1.0, 1e-3, n)
  a, s = _closed_alpha_sigma("vpsde", ts)
  return ts, a, s, 1.0


@pytest.mark.parametrize(
  "sampler,name,n,tol_sd",
  [
    ("ddpm", "discrete", 1000, 0.005),
    ("ddpm", "discrete", 50, 0.05),  # respaced fixed_small: the chain's std is 0.253
    ("euler_ancestral", "edm", 100, 0.035),
    ("euler_ancestral", "discrete", 100, 0.035),
    ("dpmpp_2m_sde", "edm", 100, 0.035),
    ("dpmpp_2m_sde", "vpsde", 100, 0.035),
  ],
)
def test_stochastic_samplers_reproduce_data_moments(sampler, name, n, tol_sd):
  """Sample moments = the exact moments of the discrete chain (sampling error only), and those are
  (MU, SD) up to the method's discretisation error."""
  proc = {"discrete": LINEAR, "edm": processes.EDM(), "vpsde": processes.VPSDE()}[name]
  ts, a, s, prior = _levels(name, n)
  m = 4000
  x = jaxdiff.sample(exact_model(proc), proc, (m, 1), jax.random.key(5), sampler=sampler, num_steps=n, ts=ts)
  x = np.asarray(x, np.float64)
  em, es = exact_chain_moments(sampler, a, s, prior)
  print(f"{sampler} {name} n={n}: sample mean {x.mean():.4f} std {x.std():.4f}; chain {em:.4f} {es:.4f}")
  assert abs(x.mean() - em) < 4.5 * es / math.sqrt(m), (x.mean(), em)
  assert abs(x.std() - es) < 4.5 * es / math.sqrt(2 * m), (x.std(), es)
  assert abs(em - MU) < 0.01 and abs(es - SD) < tol_sd, (em, es)


# ---- 7. compile once per shape ------------------------------------------------------------


@pytest.mark.parametrize(
  "proc,sampler,prediction",
  [(LINEAR, "ddim", "eps"), (processes.EDM(), "heun", "edm"), (processes.RectifiedFlow(), "unipc", "flow")],
  ids=["discrete-ddim", "edm-heun", "flow-unipc"],
)
def test_sample_traces_once_for_new_params_and_key(proc, sampler, prediction):
  traces = []

  def apply_fn(params, x, t):
    traces.append(1)
    return jnp.tanh(x * params["w"]) + params["b"]

  p1 = {"w": jnp.ones(()), "b": jnp.zeros(())}
  p2 = {"w": 2 * jnp.ones(()), "b": 0.1 * jnp.ones(())}
  kw = dict(sampler=sampler, num_steps=7, prediction=prediction)
  a = jaxdiff.sample(jaxdiff.bind(apply_fn, p1), proc, (4, 2), jax.random.key(0), **kw)
  first = len(traces)
  assert first > 0
  b = jaxdiff.sample(jaxdiff.bind(apply_fn, p2), proc, (4, 2), jax.random.key(1), **kw)
  assert len(traces) == first, "retraced for new params / key"
  assert not np.allclose(np.asarray(a), np.asarray(b))


# ---- 8. sampler registry and the step-level API -------------------------------------------


class _OutsideDDIM(samplers.Sampler):
  """A sampler written outside the package: DDIM with its eps term scaled by `gain` (1 = DDIM)."""

  name = "test_outside_ddim"

  gain: float = 1.0

  def step(self, ctx, state, inp, final):
    d = ctx.denoise(state.x, inp.t, inp.alpha, inp.sigma, state.x0)
    x = inp.alpha_next * d.x0 + self.gain * inp.sigma_next * d.eps
    return samplers.State(x, d.x0, state.aux), d.x0


def test_registry_accepts_a_sampler_from_outside():
  samplers.register(_OutsideDDIM)
  assert samplers.get("test_outside_ddim") is _OutsideDDIM and "test_outside_ddim" in samplers.SAMPLERS
  proc = processes.VPSDE()
  z = jax.random.normal(jax.random.key(0), (32, 2))
  kw = dict(num_steps=15, prediction="v", x_init=z)
  model = exact_model(proc, "v")
  mine = jaxdiff.sample(model, proc, (32, 2), jax.random.key(0), sampler="test_outside_ddim", **kw)
  ddim = jaxdiff.sample(model, proc, (32, 2), jax.random.key(0), sampler="ddim", **kw)
  np.testing.assert_allclose(np.asarray(mine), np.asarray(ddim), rtol=1e-5, atol=1e-6)
  half = jaxdiff.sample(model, proc, (32, 2), jax.random.key(0), sampler="test_outside_ddim", gain=0.5, **kw)
  assert not np.allclose(np.asarray(half), np.asarray(ddim), atol=1e-3)  # its option is honoured
  with pytest.raises(ValueError, match="gain"):  # an option it does not take names the ones it does
    jaxdiff.sample(model, proc, (32, 2), jax.random.key(0), sampler="test_outside_ddim", eta=0.5, **kw)
  assert jaxdiff.nfe("test_outside_ddim", 15) == 15


@pytest.mark.parametrize("sampler", ["ddim", "dpmpp_2m", "heun"])
def test_stepper_loop_equals_sample(sampler):
  proc = processes.VPSDE()
  z = jax.random.normal(jax.random.key(0), (16, 2))
  n = 12
  kw = dict(sampler=sampler, num_steps=n, prediction="v")
  model = exact_model(proc, "v")
  want = jaxdiff.sample(model, proc, (16, 2), jax.random.key(1), x_init=z, **kw)
  st = samplers.Stepper(model, proc, (16, 2), **kw)
  state = st.init(jax.random.key(1), x_init=z)
  for i in range(st.num_steps):
    state = st.step(state, i)
  np.testing.assert_allclose(np.asarray(state.x), np.asarray(want), rtol=1e-5, atol=1e-5)
  # without x_init, init draws the same starting noise as sample(..., key)
  state = st.init(jax.random.key(2))
  for i in range(st.num_steps):
    state = st.step(state, i)
  want2 = jaxdiff.sample(model, proc, (16, 2), jax.random.key(2), **kw)
  np.testing.assert_allclose(np.asarray(state.x), np.asarray(want2), rtol=1e-5, atol=1e-5)


# ---- 9. losses per process ----------------------------------------------------------------


def _drawn_times(proc, n=20000, **kw):
  seen = {}

  def model(x, t):
    seen["t"] = t
    return jnp.zeros_like(x)

  jaxdiff.loss(model, proc, jnp.zeros((n, 1)), jax.random.key(7), prediction="x0", **kw)
  return np.asarray(seen["t"], np.float64)


def test_loss_time_distributions_per_process():
  n = 20000
  ls = np.log(_drawn_times(processes.EDM(), n))
  assert abs(ls.mean() + 1.2) < 4 * 1.2 / math.sqrt(n), ls.mean()
  assert abs(ls.std() - 1.2) < 0.03, ls.std()
  u = _drawn_times(processes.RectifiedFlow(), n)
  assert u.min() >= 0 and u.max() <= 1
  assert abs(u.mean() - 0.5) < 4 / math.sqrt(12 * n) and abs(u.std() - 1 / math.sqrt(12)) < 0.01
  ln = _drawn_times(processes.RectifiedFlow(), n, time_sampling="logit_normal")
  lg = np.log(ln / (1 - ln))
  assert abs(lg.mean()) < 4 / math.sqrt(n) and abs(lg.std() - 1.0) < 0.03, (lg.mean(), lg.std())
  v = _drawn_times(processes.VPSDE(), n)
  assert v.min() >= 1e-3 - 1e-7 and v.max() <= 1.0
  assert abs(v.mean() - (1 + 1e-3) / 2) < 4 * 0.2886 / math.sqrt(n), v.mean()


def _irreducible_factor(proc, a, sg, prediction):
  """Output = A x_t + B x0 given x_t: the optimal loss is B^2 * posterior variance of x0."""
  if prediction == "x0":
    return 1.0
  if prediction == "eps":
    return (a / sg) ** 2
  if prediction == "v":
    return ((a * a + sg * sg) / sg) ** 2
  if prediction == "flow":
    return (1 + a / sg) ** 2
  sd = _sigma_data(proc)
  st = sg / a
  return (st**2 + sd**2) / (st * sd) ** 2  # 1 / c_out^2


@pytest.mark.parametrize("name,proc,rng", PROCS, ids=PROC_IDS)
def test_loss_at_the_optimum_is_the_irreducible_value(name, proc, rng):
  b, d = 4096, 8
  t = _times(proc, *rng, b)
  x0 = MU + SD * jax.random.normal(jax.random.key(3), (b, d))
  a, sg = (np.asarray(v, np.float64) for v in processes.as_process(proc).alpha_sigma(t))
  pv = SD**2 * sg**2 / (a * a * SD**2 + sg * sg)
  for pred in PREDICTIONS:
    val, _ = jaxdiff.loss(exact_model(proc, pred), proc, x0, jax.random.key(4), prediction=pred, t=t)
    per = _irreducible_factor(proc, a, sg, pred) * pv
    want, se = per.mean(), math.sqrt(2 * np.mean(per**2) / (b * d))
    assert abs(float(val) - want) < 5 * se, (name, pred, float(val), want, se)


def test_edm_weighting_equals_F_space_error():
  """lambda(sigma) c_out(sigma)^2 = 1: the EDM-weighted x0 loss is the unweighted F loss."""
  edm = processes.EDM()
  b = 256
  sig = jnp.exp(-1.2 + 1.2 * jax.random.normal(jax.random.key(0), (b,)))
  x0 = MU + SD * jax.random.normal(jax.random.key(1), (b, 2))
  noise = jax.random.normal(jax.random.key(2), (b, 2))
  x0_hat = lambda x, t: 0.3 * jnp.tanh(x) + 0.1  # noqa: E731  an imperfect denoiser

  def in_space(pred):
    def fn(x, t):
      a, sg = _alpha_sigma(edm, t, x)
      if pred == "edm":
        x = x * jnp.sqrt(sg**2 + 0.25)
      xh = x0_hat(x, t)
      return express(edm, x, a, sg, xh, (x - a * xh) / sg, pred)

    return fn

  kw = dict(t=sig, noise=noise)
  l_x0, _ = jaxdiff.loss(in_space("x0"), edm, x0, jax.random.key(0), prediction="x0", weighting="edm", **kw)
  l_f, _ = jaxdiff.loss(in_space("edm"), edm, x0, jax.random.key(0), prediction="edm", weighting="none", **kw)
  l_fe, _ = jaxdiff.loss(in_space("edm"), edm, x0, jax.random.key(0), prediction="edm", weighting="edm", **kw)
  s = np.asarray(sig, np.float64)[:, None]
  x_t = np.asarray(x0) + s * np.asarray(noise)
  err = np.asarray(x0_hat(jnp.asarray(x_t, jnp.float32), sig), np.float64) - np.asarray(x0)
  lam = (s**2 + 0.25) / (s * 0.5) ** 2
  want = np.mean(lam * err**2)
  np.testing.assert_allclose(float(l_x0), want, rtol=1e-4)
  np.testing.assert_allclose(float(l_f), want, rtol=1e-4)
  np.testing.assert_allclose(float(l_fe), want, rtol=1e-4)


@pytest.mark.parametrize("weighting", ["min_snr", "p2"])
@pytest.mark.parametrize("name,proc,rng", PROCS[1:], ids=PROC_IDS[1:])
def test_weightings_agree_across_predictions(name, proc, rng, weighting):
  """The same underlying denoiser gives the same weighted loss in every parameterisation."""
  b = 128
  t = _times(proc, *rng, b)
  x0 = MU + SD * jax.random.normal(jax.random.key(1), (b, 2))
  noise = jax.random.normal(jax.random.key(2), (b, 2))

  def in_space(pred):
    def fn(x, t):
      a, sg = _alpha_sigma(proc, t, x)
      if pred == "edm":
        x = a * x * jnp.sqrt((sg / a) ** 2 + _sigma_data(proc) ** 2)
      xh = 0.3 * jnp.tanh(x) + 0.1
      return express(proc, x, a, sg, xh, (x - a * xh) / sg, pred)

    return fn

  vals = {
    p: float(
      jaxdiff.loss(
        in_space(p), proc, x0, jax.random.key(0), prediction=p, weighting=weighting, t=t, noise=noise
      )[0]
    )
    for p in PREDICTIONS
  }
  for p in PREDICTIONS:
    np.testing.assert_allclose(vals[p], vals["x0"], rtol=2e-3, err_msg=f"{p}: {vals}")
