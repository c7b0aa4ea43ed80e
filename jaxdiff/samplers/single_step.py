"""One-step samplers: DDPM (ancestral), DDIM, Euler, Euler ancestral and Heun, on any process.

Each step goes from a level (alpha, sigma) to the next (alpha', sigma'). Updates are written in
the form alpha' x0 + sigma' eps + correction, which is Euler's method in every frame and stays
exact where alpha = 0 (zero terminal SNR) or sigma/alpha is huge (cosine schedules).
"""

from __future__ import annotations

import math

import jax.numpy as jnp

from jaxdiff.errors import SamplingError
from jaxdiff.processes import FRAMES
from jaxdiff.samplers.base import (
  NOISE_STREAM_CHURN,
  Context,
  Sampler,
  State,
  StepInput,
  ddim_update,
  register,
  static,
)

__all__ = ["DDPM", "DDIM", "Euler", "EulerAncestral", "Heun", "VARIANCES"]

VARIANCES = ("fixed_small", "fixed_large", "learned_range")


@register
class DDPM(Sampler):
  """Ancestral sampling from the Gaussian posterior q(x_s | x_t, x0_hat) between grid levels.

  With every timestep of a chain this is DDPM; on fewer steps it is improved DDPM's respacing
  (the step's beta is 1 - alpha_t^2 / alpha_s^2). variance: "fixed_small" (the posterior's
  beta~), "fixed_large" (beta) or "learned_range" (the model's extra channels interpolate
  log beta~ .. log beta, the last step reusing the previous step's clipped beta~).
  """

  name = "ddpm"
  finite_top = False

  variance: str = static("fixed_small")

  def check_options(self):
    if self.variance not in VARIANCES:
      raise SamplingError(f"variance must be one of {VARIANCES}, got {self.variance!r}.")

  @property
  def uses_variance(self):
    return self.variance == "learned_range"

  def prepare(self, alpha, sigma, alpha_next, sigma_next):
    ratio = alpha / alpha_next
    var_step = jnp.square(sigma) - jnp.square(ratio * sigma_next)  # sigma_{t|s}^2, the step's "beta"
    s2 = jnp.square(sigma)
    small = var_step * jnp.square(sigma_next) / s2
    n = alpha.shape[0]
    clipped = jnp.concatenate([small[:-1], small[-2:-1]]) if n > 1 else jnp.maximum(small, 1e-20)
    return {
      "c_x0": alpha_next * var_step / s2,
      "c_x": ratio * jnp.square(sigma_next) / s2,
      "small": small,
      "large": var_step,
      "log_small": jnp.log(clipped),
      "log_large": jnp.log(var_step),
    }

  def step(self, ctx: Context, state: State, inp: StepInput, final: bool):
    e = inp.extra
    d = ctx.denoise(state.x, inp.t, inp.alpha, inp.sigma, state.x0)
    mean = e["c_x0"] * d.x0 + e["c_x"] * state.x
    if self.variance == "fixed_small":
      log_var = jnp.log(jnp.maximum(e["small"], 1e-20))
    elif self.variance == "fixed_large":
      log_var = e["log_large"]
    else:
      frac = (d.extra + 1.0) / 2.0
      log_var = frac * e["log_large"] + (1.0 - frac) * e["log_small"]
    std = jnp.where(inp.clean, 0.0, jnp.exp(0.5 * log_var))
    x = mean + std * ctx.noise(inp.index, state.x.shape)
    return State(x, d.x0, state.aux), d.x0


@register
class DDIM(Sampler):
  """DDIM (Song et al. 2021): x' = alpha' x0 + sqrt(sigma'^2 - s^2) eps + s z, s = eta x posterior std.

  On a discrete chain with `leading`/`trailing` spacing it steps t -> t - T // n, as diffusers'
  DDIMScheduler does. With `clip_x0`, `clipped_eps` picks the eps of the update: re-derived from
  the clipped x0 (True; diffusers' use_clipped_model_output=True) or the model's own (False;
  DDIMPipeline's default).
  """

  name = "ddim"
  invertible = True
  finite_top = False
  stride_steps = True
  zero_programs = ("eta",)

  eta: float = 0.0
  clipped_eps: bool = static(True)

  def check_options(self):
    if not isinstance(self.clipped_eps, bool):
      raise SamplingError(f"clipped_eps must be True or False, got {self.clipped_eps!r}.")
    eta = self.number("eta")
    if eta is not None and not (eta >= 0 and math.isfinite(eta)):
      raise SamplingError(f"eta must be a finite number >= 0, got {self.eta!r}.")

  def check_invertible(self):
    if not self.is_zero("eta"):
      eta = "a traced value" if self.number("eta") is None else repr(self.eta)
      raise SamplingError(
        f"ddim with eta={eta} is stochastic and cannot be inverted; invert with eta=0 (a Python number)."
      )

  def step(self, ctx, state, inp, final):
    d = ctx.denoise(state.x, inp.t, inp.alpha, inp.sigma, state.x0)
    if not self.clipped_eps and d.model_eps is not None:
      d = d._replace(eps=d.model_eps)
    if self.is_zero("eta"):
      return State(ddim_update(inp.alpha_next, inp.sigma_next, d.x0, d.eps), d.x0, state.aux), d.x0
    shrink = inp.alpha * inp.sigma_next / (inp.alpha_next * inp.sigma)
    noise_std = self.eta * inp.sigma_next * jnp.sqrt(jnp.maximum(1.0 - jnp.square(shrink), 0.0))
    direction = jnp.sqrt(jnp.maximum(jnp.square(inp.sigma_next) - jnp.square(noise_std), 0.0))
    x = inp.alpha_next * d.x0 + direction * d.eps + noise_std * ctx.noise(inp.index, state.x.shape)
    return State(x, d.x0, state.aux), d.x0


class _Churn(Sampler):
  """EDM's stochastic churn (Algorithm 2): raise the level from sigma/alpha to (1 + gamma) times
  it before the step, gamma = min(s_churn / n, sqrt(2) - 1) inside [s_tmin, s_tmax]. On an
  integer grid the raised level snaps to the nearest timestep (in log sigma) at or above t."""

  invertible = True
  zero_programs = ("s_churn",)

  s_churn: float = 0.0
  s_tmin: float = 0.0
  s_tmax: float = float("inf")
  s_noise: float = 1.0

  def check_invertible(self):
    if not self.is_zero("s_churn"):
      churn = "a traced value" if self.number("s_churn") is None else repr(self.s_churn)
      raise SamplingError(
        f"{self.name} with s_churn={churn} is stochastic and cannot be inverted; invert with s_churn=0."
      )

  def check_options(self):
    for k in ("s_churn", "s_tmin", "s_noise"):
      v = self.number(k)
      if v is not None and not v >= 0:
        raise SamplingError(f"{k} must be >= 0, got {getattr(self, k)!r}.")

  def prepare(self, alpha, sigma, alpha_next, sigma_next):
    n = alpha.shape[0]
    if self.is_zero("s_churn"):
      return {"gamma": jnp.zeros((n,), alpha.dtype)}
    gamma = jnp.minimum(jnp.asarray(self.s_churn, alpha.dtype) / n, math.sqrt(2.0) - 1.0)
    return {"gamma": jnp.full((n,), gamma, alpha.dtype)}

  def caps_top(self, process):
    return not self.is_zero("s_churn")  # the churn raises sigma/alpha

  def churn(self, ctx: Context, x, inp: StepInput):
    """(x_hat, t_hat, alpha_hat, sigma_hat): the state re-noised to the raised level."""
    if self.is_zero("s_churn"):
      return x, inp.t, inp.alpha, inp.sigma
    ratio = inp.sigma / inp.alpha
    inside = (ratio >= self.s_tmin) & (ratio <= self.s_tmax)
    gamma = jnp.where(inside, inp.extra["gamma"], 0.0)
    t_hat = ctx.process.time_at(ratio * (1.0 + gamma))
    if ctx.integer_times:
      top = ctx.process.num_timesteps - 1
      t_hat = jnp.maximum(jnp.clip(jnp.round(t_hat), 0, top).astype(jnp.int32), inp.t)
    else:
      t_hat = jnp.where(gamma > 0, t_hat, inp.t).astype(inp.t.dtype)
    # Where the level is not raised, the state, time and level stay exactly as they are (no noise:
    # a square root of a rounding residue would add some).
    raised = (gamma > 0) & (t_hat != inp.t)
    a_h, s_h = ctx.process.alpha_sigma(t_hat)
    a_h = jnp.where(raised, a_h.astype(inp.alpha.dtype), inp.alpha)
    s_h = jnp.where(raised, s_h.astype(inp.sigma.dtype), inp.sigma)
    ratio_h = s_h / a_h
    add_std = a_h * jnp.sqrt(jnp.maximum(jnp.square(ratio_h) - jnp.square(ratio), 0.0))
    add_std = jnp.where(raised, add_std, 0.0)
    z = ctx.noise(inp.index, x.shape, stream=NOISE_STREAM_CHURN)
    x_hat = jnp.where(raised, (a_h / inp.alpha) * x + add_std * self.s_noise * z, x)
    return x_hat, jnp.where(raised, t_hat, inp.t), a_h, s_h


@register
class Euler(_Churn):
  """Euler's method on the probability-flow ODE (EDM Algorithm 1; with s_churn, Algorithm 2).

  Without churn it equals DDIM with eta = 0 on every process, in every frame.
  """

  name = "euler"

  def step(self, ctx, state, inp, final):
    x, t, a, s = self.churn(ctx, state.x, inp)
    d = ctx.denoise(x, t, a, s, state.x0)
    return State(ddim_update(inp.alpha_next, inp.sigma_next, d.x0, d.eps), d.x0, state.aux), d.x0


def frame_terms(frame: str, alpha, sigma, x0, eps):
  """(scale c, time s, slope d) of the ODE frame: y = x / c moves along s with dy/ds = d."""
  if frame == "sigma":
    return alpha, sigma / alpha, eps
  c = alpha + sigma
  return c, sigma / c, eps - x0


@register
class Heun(_Churn):
  """Heun's second-order method (EDM Algorithm 2), the last step to clean data plain Euler.

  frame: "sigma" integrates d(x/alpha)/d(sigma/alpha) = eps (k-diffusion, diffusers'
  HeunDiscreteScheduler, EDM); "flow" integrates d(x/(alpha+sigma))/dt' = eps - x0 with
  t' = sigma/(alpha+sigma) in [0, 1] (diffusers' FlowMatchHeunDiscreteScheduler). None takes the
  process's own frame: sigma for EDM, flow for the others, whose top levels (sigma/alpha up to
  2e4 on cosine(1000), infinite at zero terminal SNR) the sigma frame integrates badly.
  """

  name = "heun"
  inpaint = False
  split_final = True

  frame: str | None = static(None)

  def check_options(self):
    super().check_options()
    if self.frame is not None and self.frame not in FRAMES:
      raise SamplingError(f"frame must be one of {FRAMES} or None (the process's own), got {self.frame!r}.")

  def nfe(self, num_steps):
    return 2 * int(num_steps) - 1

  def caps_top(self, process):
    return super().caps_top(process) or (self.frame or process.frame) == "sigma"

  def step(self, ctx, state, inp, final):
    x, t, a, s = self.churn(ctx, state.x, inp)
    d = ctx.denoise(x, t, a, s, state.x0)
    x_euler = ddim_update(inp.alpha_next, inp.sigma_next, d.x0, d.eps)
    if final:
      return State(x_euler, d.x0, state.aux), d.x0
    frame = self.frame or ctx.process.frame
    d2 = ctx.denoise(x_euler, inp.t_next, inp.alpha_next, inp.sigma_next, d.x0)
    _, s_cur, slope1 = frame_terms(frame, a, s, d.x0, d.eps)
    c_next, s_next, slope2 = frame_terms(frame, inp.alpha_next, inp.sigma_next, d2.x0, d2.eps)
    x_new = x_euler + c_next * (s_next - s_cur) * 0.5 * (slope2 - slope1)
    return State(x_new, d.x0, state.aux), d.x0


@register
class EulerAncestral(Sampler):
  """Euler ancestral (k-diffusion): a deterministic step to sigma_down plus fresh noise sigma_up,
  in sigma/alpha; eta scales the noise (0 = Euler), s_noise its amplitude."""

  name = "euler_ancestral"

  eta: float = 1.0
  s_noise: float = 1.0

  def check_options(self):
    for k in ("eta", "s_noise"):
      v = self.number(k)
      if v is not None and not v >= 0:
        raise SamplingError(f"{k} must be a number >= 0, got {getattr(self, k)!r}.")

  def step(self, ctx, state, inp, final):
    d = ctx.denoise(state.x, inp.t, inp.alpha, inp.sigma, state.x0)
    r, r_n = inp.sigma / inp.alpha, inp.sigma_next / inp.alpha_next
    up = jnp.sqrt(jnp.maximum(jnp.square(r_n) * (jnp.square(r) - jnp.square(r_n)) / jnp.square(r), 0.0))
    s_up = jnp.minimum(r_n, self.eta * up)
    s_down = jnp.sqrt(jnp.maximum(jnp.square(r_n) - jnp.square(s_up), 0.0))
    z = ctx.noise(inp.index, state.x.shape)
    x = inp.alpha_next * (d.x0 + s_down * d.eps + s_up * self.s_noise * z)
    return State(x, d.x0, state.aux), d.x0
