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
# # Training and sampling the digits from Python
#
# What `make demo` does from the command line, from Python: build the config of the digits demo,
# train it with `jaxdiff.training.train`, open the run with `jaxdiff.load`, draw samples with the
# run's own settings and with others, hand the model to the functional API, and score the samples
# with the digits judge that ships with the package.
#
# `JAXDIFF_NOTEBOOK_TINY=1` (what CI and the documentation build use) trains a narrower network for
# 60 steps, so its digits are blobs; the full setting is the demo's recipe (2,500 steps, about four
# minutes on two CPU cores), whose samples score a Fréchet distance of 0.98 against the held-out
# baseline's 1.43 (`configs/digits_edm.py`, the [getting-started guide](../guides/getting-started.md)).
# `JAXDIFF_NOTEBOOK_WORKDIR=runs/digits_edm` reuses a run that exists (training resumes, or does
# nothing when it is complete).

# %%
import os
import tempfile

TINY = os.environ.get("JAXDIFF_NOTEBOOK_TINY", "0") == "1"
WORKDIR = os.environ.get("JAXDIFF_NOTEBOOK_WORKDIR") or tempfile.mkdtemp(prefix="jaxdiff_digits_")

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

import jaxdiff
from jaxdiff.configs import digits
from jaxdiff.evaluation import evaluate_digits, format_table
from jaxdiff.training import train

# %% [markdown]
# ## The config
#
# A config is an `ml_collections.ConfigDict` that starts from the package default
# (`jaxdiff/configs/default.py` documents every field). This is `configs/digits_edm.py`: the demo's
# class-conditional UNet trained as an EDM model.

# %%
config = digits.get_config()
config.diffusion.process = "edm"
config.diffusion.prediction = "edm"
config.diffusion.weighting = "edm"
config.diffusion.sigma_data = 0.5
config.sample.sampler = "dpmpp_2m"
config.sample.num_steps = 20
config.train.compilation_cache_dir = "none"
if TINY:
  config.model.base_channels = 8
  config.model.num_groups = 4
  config.model.num_heads = 1
  config.train.num_steps = 60
  config.train.batch_size = 32
  config.train.log_every = 20
  config.train.checkpoint_every = 60
  config.train.sample_every = 0
  config.optim.warmup_steps = 0
print(config.model)

# %% [markdown]
# ## Training
#
# `train(config, workdir)` is what `train.py` calls: it writes `config.json`, checkpoints (Orbax),
# `metrics.jsonl` and TensorBoard events under the workdir and resumes from the newest checkpoint
# when the workdir already holds the run.

# %%
state = train(config, WORKDIR)
print("trained to step", int(state.step), "in", WORKDIR)

# %%
import json

with open(os.path.join(WORKDIR, "metrics.jsonl")) as f:
  records = [json.loads(line) for line in f]
steps = [r["step"] for r in records if "loss" in r]
losses = [r["loss"] for r in records if "loss" in r]
fig, ax = plt.subplots(figsize=(5, 3))
ax.plot(steps, losses)
ax.set_xlabel("step")
ax.set_ylabel("training loss")
plt.show()

# %% [markdown]
# ## Opening the run: `jaxdiff.load`
#
# `jaxdiff.load(workdir)` reads the run as `sample.py` does (newest readable checkpoint, EMA
# weights). `run.sample(key, num, labels)` draws with the run's `config.sample` settings; any of
# them can be overridden by keyword.

# %%
run = jaxdiff.load(WORKDIR)
print(type(run.model).__name__, "step", run.step, "process", type(run.process).__name__, "shape", run.shape)

labels = jnp.arange(100) % 10
images = run.sample(jax.random.key(0), 100, labels=labels)


def show_grid(images, title):
  grid = np.asarray(images).reshape(10, 10, 8, 8).transpose(0, 2, 1, 3).reshape(80, 80)  # rows of 10 samples
  fig, ax = plt.subplots(figsize=(4, 4))
  ax.imshow(grid, cmap="gray", vmin=-1, vmax=1)
  ax.set_title(title)
  ax.axis("off")
  plt.show()


show_grid(images, "dpmpp_2m, 20 steps (one column per digit)")

# %% [markdown]
# Other samplers, step counts and guidance are keywords:

# %%
guided = run.sample(jax.random.key(0), 100, labels=labels, sampler="unipc", num_steps=8, guidance_scale=2.0)
show_grid(guided, "unipc, 8 steps, guidance 2")

# %% [markdown]
# ## The same model in the functional API
#
# `jaxdiff.bind(run.model.apply, run.variables)` is a `model_fn` for `jaxdiff.sample`,
# `jaxdiff.loss` and loops of your own. With the run's sampler, grid, prediction and x0 clipping it
# draws what `run.sample` drew (which also clips the final images to [-1, 1]).

# %%
model_fn = jaxdiff.bind(run.model.apply, run.variables)
x = jaxdiff.sample(
  model_fn, run.process, (100, *run.shape), jax.random.key(0), sampler="dpmpp_2m", num_steps=20,
  prediction=run.config.diffusion.prediction, cond={"y": labels}, clip_x0=run.config.sample.clip_x0 or None,
)  # fmt: skip
print("largest difference to run.sample:", float(jnp.abs(jnp.clip(x, -1, 1) - images).max()))

loss, metrics = jaxdiff.loss(
  model_fn, run.process, x, jax.random.key(1), prediction=run.config.diffusion.prediction,
  weighting="edm", cond={"y": labels},
)  # fmt: skip
print("the training loss on these samples:", float(loss))

# %% [markdown]
# ## Scoring with the digits judge
#
# `evaluate_digits` scores samples with the small classifier that ships with the package and puts
# each figure beside the same figure for real held-out digits (what `python -m jaxdiff.evaluation
# --dataset=digits` prints).

# %%
many = run.sample(jax.random.key(2), 500, labels=jnp.arange(500) % 10)
report = evaluate_digits(np.asarray(many), np.arange(500) % 10)
print(format_table(report))
