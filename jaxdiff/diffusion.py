"""The forward process, its posterior, conversions between parameterisations, and the training loss.

Every function is pure and works under jit, vmap and grad, for every process of
`jaxdiff.processes` (a `Schedule` is the discrete VP chain). Data may have any shape whose first
axis is the batch (NHWC images, [B, 2] points, ...); `t` is [B] (or a scalar) in the process's
time: int32 timesteps for a discrete chain (a float timestep is interpolated, never truncated),
t in [0, 1] for VP-SDE and flows, sigma for EDM.

Parameterisations (`prediction`): "eps", "x0", "v" = alpha eps - sigma x0, "flow" = eps - x0 (the
velocity dx/dt of rectified flow) and "edm" (the raw network F of EDM's preconditioning: with
x~ = x/alpha and s = sigma/alpha, D = c_skip x~ + c_out F(c_in x~, t) estimates x0).
"mean_velocity" is a two-time network's average velocity u(x_t, r, t) of rectified flow (one
step: x_r = x_t - (t - r) u); at r = t it is the flow velocity, and converts as "flow" does.
`loss` trains it with MeanFlow, or a shortcut model, or any x0-implying network as a consistency
model, through `few_step=` (`jaxdiff.few_step`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import optax

from jaxdiff import few_step as _few_step
from jaxdiff.errors import ArgumentError
from jaxdiff.gaussian import discretized_gaussian_log_likelihood, normal_kl
from jaxdiff.processes import DiscreteVP, as_process
from jaxdiff.schedules import Schedule

__all__ = [
  "PREDICTIONS",
  "FEW_STEP_METHODS",
  "LOSS_TYPES",
  "WEIGHTINGS",
  "check_prediction",
  "extract",
  "alpha_sigma",
  "q_sample",
  "q_mean_variance",
  "q_posterior",
  "snr",
  "x0_from_eps",
  "eps_from_x0",
  "v_from_x0_eps",
  "x0_from_v",
  "eps_from_v",
  "v_target",
  "edm_scalings",
  "model_input",
  "split_output",
  "join_output",
  "to_x0_eps",
  "from_x0_eps",
  "convert_prediction",
  "loss_weight",
  "learned_log_variance",
  "vlb_term",
  "loss",
]

PREDICTIONS = ("eps", "x0", "v", "flow", "edm", "mean_velocity")
FEW_STEP_METHODS = _few_step.METHODS
LOSS_TYPES = ("l2", "l1", "huber")
WEIGHTINGS = ("none", "p2", "min_snr", "edm")


def check_prediction(prediction: str) -> None:
  """Refuse an unknown parameterisation, naming the valid ones."""
  if prediction not in PREDICTIONS:
    raise ArgumentError(f"prediction must be one of {PREDICTIONS}, got {prediction!r}.")


_check_prediction = check_prediction  # the name older code imports


def _schedule_of(process) -> Schedule:
  if isinstance(process, Schedule):
    return process
  if isinstance(process, DiscreteVP):
    return process.schedule
  raise ArgumentError(
    f"this function is defined for discrete chains (a Schedule), not {type(process).__name__}."
  )


def _bcast(a: jnp.ndarray, ndim: int) -> jnp.ndarray:
  a = jnp.asarray(a)
  if a.ndim == 0:
    return a
  return a.reshape(a.shape + (1,) * (ndim - a.ndim))


def extract(arr: jnp.ndarray, t: jnp.ndarray, x_shape: tuple[int, ...]) -> jnp.ndarray:
  """arr[t] reshaped to broadcast against data of shape x_shape ([B] -> [B, 1, ..., 1])."""
  t = jnp.asarray(t)
  return _bcast(jnp.take(arr, t.astype(jnp.int32), axis=0), len(x_shape))


def alpha_sigma(process, t, ndim: int = 1):
  """(alpha(t), sigma(t)) of any process, shaped to broadcast against data with `ndim` axes."""
  a, s = as_process(process).alpha_sigma(t)
  return _bcast(a, ndim), _bcast(s, ndim)


def q_sample(process, x0: jnp.ndarray, t: jnp.ndarray, noise: jnp.ndarray) -> jnp.ndarray:
  """x_t = alpha(t) x0 + sigma(t) noise: a draw from q(x_t | x0)."""
  a, s = alpha_sigma(process, t, x0.ndim)
  return a * x0 + s * noise


def q_mean_variance(process, x0: jnp.ndarray, t: jnp.ndarray):
  """Mean, variance and log variance of q(x_t | x0)."""
  a, s = alpha_sigma(process, t, x0.ndim)
  var = jnp.square(s)
  return a * x0, var, jnp.log(var)


def q_posterior(schedule, x0: jnp.ndarray, x_t: jnp.ndarray, t: jnp.ndarray):
  """Mean, variance and (clipped) log variance of q(x_{t-1} | x_t, x0) of a discrete chain."""
  schedule = _schedule_of(schedule)
  mean = extract(schedule.posterior_mean_coef1, t, x_t.shape) * x0 + (
    extract(schedule.posterior_mean_coef2, t, x_t.shape) * x_t
  )
  var = extract(schedule.posterior_variance, t, x_t.shape)
  log_var = extract(schedule.posterior_log_variance_clipped, t, x_t.shape)
  return mean, var, log_var


def snr(process, t: jnp.ndarray) -> jnp.ndarray:
  """Signal-to-noise ratio alpha(t)^2 / sigma(t)^2, same shape as t."""
  a, s = as_process(process).alpha_sigma(t)
  return jnp.square(a) / jnp.square(s)


# ---- conversions between parameterisations -------------------------------------------------
# x_t = a x0 + s eps;  v = a eps - s x0;  flow = eps - x0;  EDM: D = c_skip x~ + c_out F.


def x0_from_eps(process, x_t, t, eps):
  """x0 = (x_t - sigma eps) / alpha."""
  a, s = alpha_sigma(process, t, x_t.ndim)
  return (x_t - s * eps) / a


def eps_from_x0(process, x_t, t, x0):
  """eps = (x_t - alpha x0) / sigma."""
  a, s = alpha_sigma(process, t, x_t.ndim)
  return (x_t - a * x0) / s


def v_from_x0_eps(process, x0, eps, t):
  """v = alpha eps - sigma x0 (Salimans & Ho 2022)."""
  a, s = alpha_sigma(process, t, x0.ndim)
  return a * eps - s * x0


v_target = v_from_x0_eps


def x0_from_v(process, x_t, t, v):
  """x0 = (alpha x_t - sigma v) / (alpha^2 + sigma^2) (= alpha x_t - sigma v on VP processes)."""
  a, s = alpha_sigma(process, t, x_t.ndim)
  return (a * x_t - s * v) / (a * a + s * s)


def eps_from_v(process, x_t, t, v):
  """eps = (sigma x_t + alpha v) / (alpha^2 + sigma^2)."""
  a, s = alpha_sigma(process, t, x_t.ndim)
  return (s * x_t + a * v) / (a * a + s * s)


def _sigma_data(process, sigma_data: float | None) -> float:
  if sigma_data is not None:
    return float(sigma_data)
  return float(getattr(as_process(process), "sigma_data", 0.5))


def edm_scalings(ratio, sigma_data: float = 0.5):
  """EDM's (c_skip, c_out, c_in) at the noise level ratio = sigma/alpha."""
  sd2 = sigma_data * sigma_data
  r2 = jnp.square(ratio)
  c_skip = sd2 / (r2 + sd2)
  c_out = ratio * sigma_data * jax.lax.rsqrt(r2 + sd2)
  c_in = jax.lax.rsqrt(r2 + sd2)
  return c_skip, c_out, c_in


def model_input(process, x_t, t, prediction: str, sigma_data: float | None = None):
  """What the network receives for x_t: x_t itself, or c_in x_t / alpha with prediction="edm"."""
  if prediction != "edm":
    return x_t
  a, s = alpha_sigma(process, t, x_t.ndim)
  _, _, c_in = edm_scalings(s / a, _sigma_data(process, sigma_data))
  return c_in * x_t / a


def split_output(prediction: str, x_t, alpha, sigma, output, sigma_data: float = 0.5):
  """(x0, eps) from a network output, given alpha and sigma broadcastable against x_t."""
  a, s = alpha, sigma
  if prediction == "eps":
    return (x_t - s * output) / a, output
  if prediction == "x0":
    return output, (x_t - a * output) / s
  if prediction == "v":
    n = a * a + s * s
    return (a * x_t - s * output) / n, (s * x_t + a * output) / n
  if prediction in ("flow", "mean_velocity"):  # a mean velocity at r = t is the flow velocity
    n = a + s
    return (x_t - s * output) / n, (x_t + a * output) / n
  check_prediction(prediction)
  c_skip, c_out, _ = edm_scalings(s / a, sigma_data)
  x0 = c_skip * (x_t / a) + c_out * output
  return x0, (x_t - a * x0) / s


def join_output(prediction: str, x0, eps, alpha, sigma, x_t=None, sigma_data: float = 0.5):
  """The `prediction`-parameterised output whose x0 and eps are the given ones."""
  a, s = alpha, sigma
  if prediction == "eps":
    return eps
  if prediction == "x0":
    return x0
  if prediction == "v":
    return a * eps - s * x0
  if prediction in ("flow", "mean_velocity"):
    return eps - x0
  check_prediction(prediction)
  x_t = a * x0 + s * eps if x_t is None else x_t
  c_skip, c_out, _ = edm_scalings(s / a, sigma_data)
  return (x0 - c_skip * (x_t / a)) / c_out


def to_x0_eps(process, x_t, t, output, prediction: str = "eps", sigma_data: float | None = None):
  """(x0, eps) implied by a network output of the given parameterisation."""
  check_prediction(prediction)
  a, s = alpha_sigma(process, t, x_t.ndim)
  return split_output(prediction, x_t, a, s, output, _sigma_data(process, sigma_data))


def from_x0_eps(process, x0, eps, t, prediction: str, x_t=None, sigma_data: float | None = None):
  """The `prediction`-parameterised output whose x0 and eps are the given ones (the loss target)."""
  check_prediction(prediction)
  a, s = alpha_sigma(process, t, x0.ndim)
  return join_output(prediction, x0, eps, a, s, x_t, _sigma_data(process, sigma_data))


def convert_prediction(process, x_t, t, output, source: str, target: str, sigma_data: float | None = None):
  """Re-express a network output given as `source` as `target` (any of PREDICTIONS)."""
  check_prediction(source)
  check_prediction(target)
  if source == target:
    return output
  x0, eps = to_x0_eps(process, x_t, t, output, source, sigma_data)
  return from_x0_eps(process, x0, eps, t, target, x_t=x_t, sigma_data=sigma_data)


# ---- the training loss ---------------------------------------------------------------------


def loss_weight(
  process,
  t,
  prediction: str = "eps",
  weighting: str = "none",
  *,
  min_snr_gamma: float = 5.0,
  p2_gamma: float = 1.0,
  p2_k: float = 1.0,
  sigma_data: float | None = None,
) -> jnp.ndarray:
  """Per-example weight of the `prediction`-space loss, shape [B].

  Weightings are defined on the eps-space loss (w_eps) and carried to the objective's space so
  that every objective gives the same weighted loss for the same underlying prediction. With
  ||e_x0||^2 the squared x0 error: ||e_eps||^2 = SNR ||e_x0||^2, ||e_v||^2 = ((a^2+s^2)/s)^2
  ||e_x0||^2, ||e_flow||^2 = ((a+s)/s)^2 ||e_x0||^2, ||e_F||^2 = ||e_x0||^2 / c_out^2.
  min_snr: w_eps = min(SNR, g)/SNR (Hang et al.); p2: w_eps = 1/(k + SNR)^gamma (Choi et al.);
  edm: lambda(sigma) = (s^2 + sd^2)/(s sd)^2 on the x0 loss (Karras et al.), i.e. 1 on F.
  "none" weighs every objective by 1.
  """
  check_prediction(prediction)
  if weighting not in WEIGHTINGS:
    raise ArgumentError(f"weighting must be one of {WEIGHTINGS}, got {weighting!r}.")
  t = jnp.asarray(t)
  if weighting == "none":
    return jnp.ones(t.shape, jnp.float32)
  a, s = as_process(process).alpha_sigma(t)
  r = jnp.square(a) / jnp.square(s)
  if weighting == "min_snr":
    # the limit of min(SNR, g)/SNR as SNR -> 0 is 1 (zero-terminal-SNR schedules).
    w_eps = jnp.where(r > 0, jnp.minimum(r, min_snr_gamma) / jnp.where(r > 0, r, 1.0), 1.0)
  elif weighting == "p2":
    w_eps = (p2_k + r) ** (-p2_gamma)
  else:
    sd2 = _sigma_data(process, sigma_data) ** 2
    w_eps = (jnp.square(s / a) + sd2) / sd2
  if prediction == "eps":
    return w_eps
  if prediction == "x0":
    return w_eps * r
  if prediction == "v":
    return w_eps * r * jnp.square(s / (a * a + s * s))
  if prediction in ("flow", "mean_velocity"):
    return w_eps * jnp.square(a / (a + s))
  _, c_out, _ = edm_scalings(s / a, _sigma_data(process, sigma_data))
  return w_eps * r * jnp.square(c_out)


def _elementwise_loss(pred, target, loss_type: str, huber_delta: float):
  if loss_type == "l2":
    return jnp.square(pred - target)
  if loss_type == "l1":
    return jnp.abs(pred - target)
  if loss_type == "huber":
    return optax.losses.huber_loss(pred, target, delta=huber_delta)
  raise ArgumentError(f"loss_type must be one of {LOSS_TYPES}, got {loss_type!r}.")


def learned_log_variance(schedule, t, extra: jnp.ndarray) -> jnp.ndarray:
  """Improved DDPM's learned range: frac log beta_t + (1 - frac) log beta~_t, frac = (v + 1) / 2."""
  schedule = _schedule_of(schedule)
  min_log = extract(schedule.posterior_log_variance_clipped, t, extra.shape)
  max_log = extract(jnp.log(schedule.betas), t, extra.shape)
  frac = (extra + 1.0) / 2.0
  return frac * max_log + (1.0 - frac) * min_log


def vlb_term(schedule, x0, x_t, t, x0_pred, log_var) -> jnp.ndarray:
  """The variational bound's term L_t per example, in bits per dimension (improved DDPM).

  t > 0: KL(q(x_{t-1} | x_t, x0) || N(mu(x_t, x0_pred), exp(log_var))); t = 0: the discretised
  Gaussian decoder's negative log likelihood of x0 (data on 256 levels in [-1, 1]).
  """
  true_mean, _, true_log_var = q_posterior(schedule, x0, x_t, t)
  mean, _, _ = q_posterior(schedule, x0_pred, x_t, t)
  batch = x0.shape[0]
  kl = jnp.mean(normal_kl(true_mean, true_log_var, mean, log_var).reshape(batch, -1), axis=1)
  nll = -jnp.mean(discretized_gaussian_log_likelihood(x0, mean, 0.5 * log_var).reshape(batch, -1), axis=1)
  return jnp.where(jnp.asarray(t) == 0, nll, kl) / math.log(2.0)


def _quarters(process, t):
  """Which quarter of the noise range each t falls in (0 = least noise), for the loss metrics."""
  p = as_process(process)
  if p.discrete:
    return jnp.minimum(jnp.floor(t * 4 / p.num_timesteps).astype(jnp.int32), 3)
  lo, hi, u = p.t_min, p.t_max, jnp.asarray(t, jnp.float32)
  if getattr(p, "frame", None) == "sigma":  # EDM: by log sigma
    lo, hi, u = math.log(lo), math.log(hi), jnp.log(u)
  return jnp.clip(jnp.floor(4.0 * (u - lo) / (hi - lo)), 0, 3).astype(jnp.int32)


def _few_step_loss(model_fn, proc, x0, key, method, opts, *, prediction, cond, t, noise, time_sampling,
                   sigma_data):  # fmt: skip
  """`loss` for the one- and two-step methods of `jaxdiff.few_step`."""
  if method not in FEW_STEP_METHODS:
    raise ArgumentError(f"few_step must be one of {FEW_STEP_METHODS}, got {method!r}.")
  two_time = method in _few_step.TWO_TIME_METHODS
  if two_time != (prediction == "mean_velocity"):
    need = "prediction='mean_velocity'" if two_time else "a one-time prediction (e.g. 'flow', 'x0', 'edm')"
    raise ArgumentError(f"few_step={method!r} trains {need}, got prediction={prediction!r}.")
  if method == "meanflow":
    return _few_step.meanflow_loss(model_fn, proc, x0, key, cond=cond, t=t, noise=noise, **opts)
  if method == "shortcut":
    opts.setdefault("logit_mean", float(getattr(proc, "logit_mean", 0.0)))
    opts.setdefault("logit_std", float(getattr(proc, "logit_std", 1.0)))
    return _few_step.shortcut_loss(model_fn, proc, x0, key, cond=cond, noise=noise, **opts)

  def net(x, tt, **kw):
    return model_fn(model_input(proc, x, tt, prediction, sigma_data), tt, **kw)

  def to_x0(x, tt, out):
    return to_x0_eps(proc, x, tt, out, prediction, sigma_data)[0]

  return _few_step.consistency_loss(
    net, proc, x0, key, to_x0=to_x0, cond=cond, t=t, noise=noise, time_sampling=time_sampling, **opts
  )


def loss(
  model_fn: Callable[..., jnp.ndarray],
  process,
  x0: jnp.ndarray,
  key: jax.Array,
  *,
  prediction: str = "eps",
  loss_type: str = "l2",
  weighting: str = "none",
  min_snr_gamma: float = 5.0,
  p2_gamma: float = 1.0,
  p2_k: float = 1.0,
  huber_delta: float = 1.0,
  offset_noise: float = 0.0,
  self_condition: bool = False,
  cond: Mapping[str, Any] | None = None,
  t: jnp.ndarray | None = None,
  noise: jnp.ndarray | None = None,
  time_sampling: str | None = None,
  vlb_weight: float = 0.001,
  sigma_data: float | None = None,
  few_step: str | None = None,
  few_step_options: Mapping[str, Any] | None = None,
) -> tuple[jnp.ndarray, dict[str, jnp.ndarray]]:
  """The denoising training loss: draw t and noise, predict, compare. Returns (loss, metrics).

  The time is drawn per process (`process.sample_time`): uniform integer timesteps for a
  discrete chain, log-normal sigma for EDM, uniform or `time_sampling="logit_normal"` t for
  rectified flow, uniform t for VP-SDE. model_fn(x_t, t, **cond) returns the network output in
  the `prediction` parameterisation (with "edm" it receives c_in x_t / alpha). With
  `self_condition` it also receives `x_self_cond`: zeros, or on a random half of the examples its
  own stop-gradient x0 prediction from a first pass. `offset_noise` adds offset * N(0, 1) shared
  over the spatial axes. `t` and `noise` may be given to fix them; a float `t` on a discrete
  chain is honoured (interpolated), never truncated.

  A model that outputs twice the data channels on a discrete chain has a learned variance: the
  loss adds improved DDPM's hybrid term vlb_weight * T * L_t (the mean stop-gradient in it), so
  the variance channels learn.

  One- and two-step models (`few_step`, default "meanflow" for prediction="mean_velocity"):
  "meanflow" and "shortcut" train a two-time model_fn(x_t, t, r=r, **cond) on rectified flow,
  "consistency" any x0-implying prediction on any process (`jaxdiff.few_step`); their own
  settings go in `few_step_options` (e.g. MeanFlow's ratio, omega, kappa, uncond).
  """
  check_prediction(prediction)
  proc = as_process(process)
  if few_step is not None or prediction == "mean_velocity":
    return _few_step_loss(
      model_fn, proc, x0, key, few_step or "meanflow", dict(few_step_options or {}), prediction=prediction,
      cond=cond, t=t, noise=noise, time_sampling=time_sampling, sigma_data=sigma_data,
    )  # fmt: skip
  cond = dict(cond or {})
  batch = x0.shape[0]
  channels = x0.shape[-1]
  k_t, k_noise, k_offset, k_sc = jax.random.split(key, 4)
  if t is None:
    t = proc.sample_time(k_t, batch, time_sampling)
  else:
    t = jnp.asarray(t)
    if t.shape not in ((), (batch,)):
      raise ArgumentError(f"t must be a scalar or of shape [{batch}], got {t.shape}.")
    t = jnp.broadcast_to(t, (batch,))
    if not proc.discrete and jnp.issubdtype(t.dtype, jnp.integer):
      t = t.astype(jnp.float32)
  if noise is None:
    noise = jax.random.normal(k_noise, x0.shape, x0.dtype)
    if offset_noise:
      off_shape = (batch,) + (1,) * (x0.ndim - 2) + (channels,) if x0.ndim > 2 else x0.shape[:1] + (1,)
      noise = noise + offset_noise * jax.random.normal(k_offset, off_shape, x0.dtype)
  x_t = q_sample(proc, x0, t, noise)
  net_in = model_input(proc, x_t, t, prediction, sigma_data)

  def to_x0(out):
    return to_x0_eps(proc, x_t, t, out, prediction, sigma_data)[0]

  if self_condition:
    first = model_fn(net_in, t, x_self_cond=jnp.zeros_like(x0), **cond)
    use = jax.random.bernoulli(k_sc, 0.5, (batch,)).reshape((batch,) + (1,) * (x0.ndim - 1))
    cond["x_self_cond"] = jnp.where(use, jax.lax.stop_gradient(to_x0(first[..., :channels])), 0.0)
  out = model_fn(net_in, t, **cond)
  if out.shape[-1] not in (channels, 2 * channels):
    raise ArgumentError(
      f"the model returned {out.shape[-1]} channels for data with {channels}: expected {channels} "
      f"(the prediction) or {2 * channels} (prediction and learned variance)."
    )
  learned_var = out.shape[-1] == 2 * channels
  mean_out = out[..., :channels].astype(jnp.float32)
  target = from_x0_eps(proc, x0, noise, t, prediction, x_t=x_t, sigma_data=sigma_data)

  per_elem = _elementwise_loss(mean_out, target.astype(jnp.float32), loss_type, huber_delta)
  per_example = jnp.mean(per_elem.reshape(batch, -1), axis=1)
  w = loss_weight(
    proc,
    t,
    prediction,
    weighting,
    min_snr_gamma=min_snr_gamma,
    p2_gamma=p2_gamma,
    p2_k=p2_k,
    sigma_data=sigma_data,
  )
  total = jnp.mean(w * per_example)
  metrics = {"loss_unweighted": jnp.mean(per_example)}
  if learned_var:
    if not proc.discrete:
      raise ArgumentError(
        "a learned variance (model output with 2x the data channels) is defined for discrete chains "
        f"(improved DDPM), not {type(proc).__name__}; set the model's learn_sigma off."
      )
    if not jnp.issubdtype(t.dtype, jnp.integer):
      raise ArgumentError("the learned-variance (VLB) term needs integer timesteps t.")
    x0_pred = jax.lax.stop_gradient(to_x0(mean_out))  # the mean learns from the simple loss only
    log_var = learned_log_variance(proc, t, out[..., channels:].astype(jnp.float32))
    vlb = vlb_term(proc, x0, x_t, t, x0_pred, log_var)
    total = total + vlb_weight * proc.num_timesteps * jnp.mean(vlb)
    metrics["loss_vlb"] = jnp.mean(vlb)
  metrics["loss"] = total
  # Unweighted loss by quarter of the noise range: where the model is (not) learning.
  quarter = _quarters(proc, t)
  for q in range(4):
    m = (quarter == q).astype(jnp.float32)
    metrics[f"loss_q{q}"] = jnp.sum(m * per_example) / jnp.maximum(jnp.sum(m), 1.0)
  return total, metrics
