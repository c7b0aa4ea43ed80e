"""Inpainting with any model and any level-to-level sampler (RePaint, Lugmayr et al. 2022), one scan."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxdiff.errors import SamplingError
from jaxdiff.samplers.base import INPAINT_SAMPLERS, SAMPLERS, State, get

__all__ = ["repaint_schedule", "inpaint_arrays", "run_inpaint"]

# Keys of the inpainting noise, folded into the sampler's step key (step noise uses the step index).
NOISE_STREAM_KNOWN, NOISE_STREAM_JUMP, NOISE_STREAM_KNOWN_INIT = 1_000_003, 1_000_004, 1_000_005


def inpaint_arrays(mask, known, shape, sampler_name: str):
  """The inpainting inputs as float32 arrays (mask broadcast to `shape`), or None."""
  if mask is None and known is None:
    return None
  if mask is None or known is None:
    raise SamplingError(
      "inpainting needs both inpaint_mask (1 = known) and inpaint_known (the images to complete)."
    )
  if sampler_name in SAMPLERS and not get(sampler_name).inpaint:
    raise SamplingError(f"inpainting runs with the samplers {tuple(INPAINT_SAMPLERS)}, not {sampler_name!r}.")
  known = jnp.asarray(known, jnp.float32)
  if tuple(known.shape) != shape:
    raise SamplingError(f"inpaint_known has shape {tuple(known.shape)}, expected the sample shape {shape}.")
  mask = jnp.asarray(mask, jnp.float32)
  try:
    mask = jnp.broadcast_to(mask, shape)
  except ValueError:
    raise SamplingError(
      f"inpaint_mask of shape {tuple(mask.shape)} does not broadcast to the sample shape {shape}."
    ) from None
  return {"mask": mask, "known": known}


def repaint_schedule(num_steps: int, resample: int = 1, jump: int = 1) -> tuple[np.ndarray, np.ndarray]:
  """RePaint's resampling schedule over a sampler's `num_steps` steps, as static arrays.

  Returns (steps, jump_from): the sampler step run at each iteration (step p goes from the p-th
  grid level to the next, p = num_steps - 1 lands on the clean image), and, per iteration, 0 or
  the position the state was at before it was sent back up by the forward process (jump_from =
  q > 0: the state, after step q - 1, is re-noised to the level step q - jump starts from, and
  that step runs next). Positions q = num_steps - 1, num_steps - 1 - jump, ... (>= jump) are
  jump points, each taken resample - 1 times, as RePaint's `get_schedule_jump(t_T, jump_length,
  jump_n_sample)`; resample = 1 gives 0..num_steps - 1.
  """
  n, r, j = int(num_steps), int(resample), int(jump)
  if n < 1 or r < 1 or j < 1:
    raise SamplingError(f"repaint_schedule needs num_steps, resample and jump >= 1, got {n}, {r}, {j}.")
  left = {q: r - 1 for q in range(n - 1, j - 1, -j)} if r > 1 else {}
  steps, jump_from = [], []
  q, came_from = 0, 0
  while q < n:
    steps.append(q)
    jump_from.append(came_from)
    came_from = 0
    q += 1
    if left.get(q, 0) > 0:
      left[q] -= 1
      came_from = q
      q -= j
  return np.asarray(steps, np.int64), np.asarray(jump_from, np.int64)


def _forward(x, a_from, s_from, a_to, s_to, z):
  """q(x_to | x_from) of the process: scale by alpha_to/alpha_from, add the missing variance."""
  scale = a_to / a_from
  return scale * x + jnp.sqrt(jnp.maximum(jnp.square(s_to) - jnp.square(scale * s_from), 0.0)) * z


def run_inpaint(sampler, ctx, state: State, inputs, inpaint, settings):
  """Run `sampler` over RePaint's schedule with the known region replaced, as one lax.scan.

  Iteration k runs step p_k of the plain sampler on the state that, if a jump lands here, was
  first re-noised by the forward process from the level it had reached to the level step p_k
  starts from (scale 1 and no noise when there is no jump: the same arithmetic every iteration).
  After the step the known region becomes the known image at the new level with fresh noise,
  which at the clean end is the known image itself. A jump voids multistep histories.
  Returns (final state, per-iteration (x before, x0) outputs, the iteration's step indices).
  """
  mask, known = inpaint["mask"], inpaint["known"]
  n = inputs.alpha.shape[0]
  steps, jump_from = repaint_schedule(n, settings.repaint_resample, settings.repaint_jump)
  m = len(steps)
  jumped = jump_from > 0
  gathered = jax.tree_util.tree_map(lambda a: a[steps], inputs)
  gathered = gathered._replace(index=jnp.arange(m), restart=jnp.asarray((np.arange(m) == 0) | jumped))
  src = np.maximum(jump_from - 1, 0)
  a_from = jnp.where(jnp.asarray(jumped), inputs.alpha_next[src], 1.0)
  s_from = jnp.where(jnp.asarray(jumped), inputs.sigma_next[src], 0.0)
  a_to = jnp.where(jnp.asarray(jumped), inputs.alpha[steps], 1.0)
  s_to = jnp.where(jnp.asarray(jumped), inputs.sigma[steps], 0.0)
  weight = np.ones(m, np.float32)
  if not settings.paste_known:
    weight[steps == n - 1] = 0.0  # keep the model's own last step in the known region
  k_known = jax.random.fold_in(ctx.key, NOISE_STREAM_KNOWN)
  k_jump = jax.random.fold_in(ctx.key, NOISE_STREAM_JUMP)

  def noise(k, i, shape):
    return jax.random.normal(jax.random.fold_in(k, i), shape, jnp.float32)

  def replace(x, a, s, z, w):
    mw = mask * w
    return mw * (a * known + s * z) + (1.0 - mw) * x

  def body(st, inp):
    k, af, sf, at, st_, w, step_inp = inp
    x = _forward(st.x, af, sf, at, st_, noise(k_jump, k, st.x.shape))
    x_before = x
    st, x0 = sampler.step(ctx.for_step(step_inp), st._replace(x=x), step_inp, False)
    x = replace(st.x, step_inp.alpha_next, step_inp.sigma_next, noise(k_known, k, st.x.shape), w)
    return st._replace(x=x), (x_before, x0)

  z0 = noise(jax.random.fold_in(ctx.key, NOISE_STREAM_KNOWN_INIT), 0, state.x.shape)
  state = state._replace(x=replace(state.x, inputs.alpha[0], inputs.sigma[0], z0, 1.0))
  xs = (jnp.arange(m), a_from, s_from, a_to, s_to, jnp.asarray(weight), gathered)
  state, ys = jax.lax.scan(body, state, xs)
  return state, ys, steps
