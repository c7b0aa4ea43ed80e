# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # The functional API on 2-D data
#
# Train a small MLP on the S-curve with nothing but `jaxdiff.loss`, `optax` and a jitted step,
# then sample it with several samplers, look at the trajectories, invert samples back to their
# noise and score the samples against fresh draws. Everything here is a pure function: the model
# is any `model_fn(x_t, t) -> output`, the process is data, and randomness is an explicit key.
#
# `JAXDIFF_NOTEBOOK_TINY=1` (what CI and the documentation build use) trains for a few hundred
# steps instead of a few thousand: the pictures are rougher, the code is the same.

# %%
import os

TINY = os.environ.get("JAXDIFF_NOTEBOOK_TINY", "0") == "1"
TRAIN_STEPS = 300 if TINY else 4000
NUM_SAMPLES = 1000 if TINY else 4000
SAMPLERS = ("euler", "dpmpp_2m") if TINY else ("euler", "heun", "dpmpp_2m", "unipc")
STEP_COUNTS = (4, 16) if TINY else (4, 8, 16)

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import optax

import jaxdiff
from jaxdiff.data import sample_toy2d
from jaxdiff.evaluation import sliced_wasserstein

# %% [markdown]
# ## Data, model and process
#
# The data are 2-D points of the S-curve (`jaxdiff.data.sample_toy2d` draws fresh points from the
# true distribution). The process is rectified flow: `x_t = (1 - t) x0 + t eps`, `t` in [0, 1],
# and the network predicts the flow velocity `eps - x0` (`prediction="flow"`). Any other process
# (`jaxdiff.EDM()`, `jaxdiff.VPSDE()`, a `jaxdiff.schedules.linear(1000)` chain) and
# parameterisation (`"eps"`, `"x0"`, `"v"`, `"edm"`) goes through the same calls.

# %%
data = jnp.asarray(sample_toy2d("s_curve", 20_000, 0))
process = jaxdiff.RectifiedFlow()
model = jaxdiff.models.MLP(hidden_dim=128, num_layers=3, time_input="unit")
params = model.init(jax.random.key(0), data[:8], jnp.zeros(8))

fig, ax = plt.subplots(figsize=(4, 4))
ax.scatter(data[:2000, 0], data[:2000, 1], s=2)
ax.set_title("S-curve: training data")
ax.set_aspect("equal")
plt.show()

# %% [markdown]
# ## Training: one jitted step
#
# `jaxdiff.loss(model_fn, process, x0, key, prediction=...)` draws the time and the noise, forms
# `x_t` and returns the mean loss with its metrics. `jaxdiff.bind(model.apply, params)` makes the
# model a function of `(x, t)` whose parameters stay arguments, so `jax.grad` differentiates
# through it.

# %%
optimizer = optax.adam(optax.cosine_decay_schedule(2e-3, TRAIN_STEPS, alpha=0.05))
opt_state = optimizer.init(params)


def loss_fn(params, x0, key):
  model_fn = jaxdiff.bind(model.apply, params)
  return jaxdiff.loss(model_fn, process, x0, key, prediction="flow", time_sampling="logit_normal")


@jax.jit
def train_step(params, opt_state, step):
  key = jax.random.fold_in(jax.random.key(1), step)  # per-step randomness: a rerun is the same run
  batch_key, loss_key = jax.random.split(key)
  x0 = data[jax.random.randint(batch_key, (256,), 0, data.shape[0])]
  (loss, _), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, x0, loss_key)
  updates, opt_state = optimizer.update(grads, opt_state, params)
  return optax.apply_updates(params, updates), opt_state, loss


losses = []
for step in range(TRAIN_STEPS):
  params, opt_state, loss = train_step(params, opt_state, step)
  losses.append(float(loss))

fig, ax = plt.subplots(figsize=(5, 3))
ax.plot(np.convolve(losses, np.ones(20) / 20, mode="valid"))
ax.set_xlabel("step")
ax.set_ylabel("loss (running mean of 20)")
plt.show()

# %% [markdown]
# ## Sampling and trajectories
#
# `jaxdiff.sample` runs the whole sampling loop as one `lax.scan` inside one `jit`;
# `return_trajectory=True` also returns `{"x": ..., "x0": ...}`: the state before each step and the
# final sample (from pure noise at t = 1 to the data at t = 0), and the model's estimate of the
# clean point at each step.

# %%
model_fn = jaxdiff.bind(model.apply, params)
samples, trajectory = jaxdiff.sample(
  model_fn, process, (NUM_SAMPLES, 2), jax.random.key(2), sampler="euler", num_steps=20,
  prediction="flow", return_trajectory=True,
)  # fmt: skip
trajectory = np.asarray(trajectory["x"])
print("trajectory:", trajectory.shape, "(steps + 1, samples, 2)")

fig, axes = plt.subplots(1, 2, figsize=(9, 4))
axes[0].scatter(samples[:, 0], samples[:, 1], s=2)
axes[0].set_title("samples (euler, 20 steps)")
for i in range(40):
  axes[1].plot(trajectory[:, i, 0], trajectory[:, i, 1], lw=0.6)
axes[1].scatter(trajectory[-1, :40, 0], trajectory[-1, :40, 1], s=6, c="k")
axes[1].set_title("40 trajectories, noise to data")
for ax in axes:
  ax.set_aspect("equal")
plt.show()

# %% [markdown]
# ## Samplers against network evaluations
#
# Every sampler takes every process. The sliced Wasserstein distance to fresh S-curve draws
# (`jaxdiff.evaluation.sliced_wasserstein`) is the score; a second fresh draw gives the noise floor
# at this sample size.

# %%
reference = sample_toy2d("s_curve", NUM_SAMPLES, 1)
floor = float(sliced_wasserstein(sample_toy2d("s_curve", NUM_SAMPLES, 2), reference))
print(f"noise floor (second fresh draw): {floor:.4f}")
for sampler in SAMPLERS:
  for num_steps in STEP_COUNTS:
    x = jaxdiff.sample(model_fn, process, (NUM_SAMPLES, 2), jax.random.key(3), sampler=sampler,
                       num_steps=num_steps, prediction="flow")  # fmt: skip
    swd = float(sliced_wasserstein(np.asarray(x), reference))
    print(f"{sampler:9s} {num_steps:2d} steps, {jaxdiff.nfe(sampler, num_steps):2d} NFE: SWD {swd:.4f}")

# %% [markdown]
# ## Inversion: from data back to noise
#
# `jaxdiff.invert` runs a deterministic sampler backwards. Sampling from the result with the same
# sampler and grid gives the points back, up to the solver's discretisation error.

# %%
x0 = jnp.asarray(reference[:500])
kw = dict(sampler="heun", num_steps=16, prediction="flow")
noise = jaxdiff.invert(model_fn, process, x0, **kw)
back = jaxdiff.sample(model_fn, process, x0.shape, jax.random.key(4), x_init=noise, **kw)
print("round trip, max error:", float(jnp.abs(back - x0).max()))

fig, axes = plt.subplots(1, 2, figsize=(9, 4))
axes[0].scatter(noise[:, 0], noise[:, 1], s=3, c=x0[:, 0], cmap="viridis")
axes[0].set_title("inverted noise (coloured by x0[0])")
axes[1].scatter(back[:, 0], back[:, 1], s=3, c=x0[:, 0], cmap="viridis")
axes[1].set_title("sampled back from it")
for ax in axes:
  ax.set_aspect("equal")
plt.show()

# %% [markdown]
# ## Likelihood by the probability-flow ODE
#
# `jaxdiff.evaluation.ode_log_likelihood` integrates the same ODE with an adaptive solver and a
# Hutchinson trace estimate (exact here: D = 2). Points on the curve are likely, points off it not.

# %%
from jaxdiff.evaluation import ode_log_likelihood

points = jnp.concatenate([x0[:4], jnp.array([[0.0, 0.0], [0.9, -0.9]])])
log_p = ode_log_likelihood(model_fn, process, points, jax.random.key(5), prediction="flow", exact_trace=True)
for p, lp in zip(np.asarray(points), np.asarray(log_p)):
  print(f"x = ({p[0]:+.2f}, {p[1]:+.2f}): log p = {lp:+.2f} nats")
