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
# # diffusers checkpoints in and out
#
# `jaxdiff.interop` reads and writes Hugging Face diffusers folders (`config.json` +
# `diffusion_pytorch_model.safetensors`) through the safetensors numpy API. Here a small
# `UNet2DModel` with random weights is made in PyTorch (nothing is downloaded), saved as a
# `DDIMPipeline`, brought into jaxdiff as a network and as a training workdir, sampled on both
# sides from the same noise, and written back out.
#
# torch and diffusers are only needed for the PyTorch side of the comparison (`pip install -e
# ".[dev]"` has diffusers; torch comes with `make setup` when a CPU wheel is at hand). Without torch
# the notebook makes the diffusers folder with jaxdiff itself and skips the PyTorch comparison.
# `JAXDIFF_NOTEBOOK_TINY=1` (CI and the documentation build) uses fewer sampling steps.

# %%
import os
import pathlib
import tempfile

TINY = os.environ.get("JAXDIFF_NOTEBOOK_TINY", "0") == "1"
NUM_STEPS = 10 if TINY else 50
FOLDER = pathlib.Path(tempfile.mkdtemp(prefix="jaxdiff_interop_"))

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

import jaxdiff
from jaxdiff.interop import export_workdir, import_diffusers, load_diffusers_unet, save_diffusers_unet

try:
  import diffusers
  import torch
  from diffusers import DDIMPipeline, DDIMScheduler, UNet2DModel

  diffusers.utils.logging.set_verbosity_error()
  diffusers.utils.logging.disable_progress_bar()
except ImportError:  # the jaxdiff side alone
  torch = None


def nchw(a):
  """A jax NHWC array as a torch NCHW tensor (a copy: torch wants a writable buffer)."""
  return torch.tensor(np.array(a).transpose(0, 3, 1, 2))


print("PyTorch side:", "torch " + torch.__version__ if torch else "not installed (skipped)")

# %% [markdown]
# ## A diffusers pipeline with random weights
#
# A class-free DDPM-style UNet on 8×8 grey images (the digits' shape), with an attention level, and
# the DDIM scheduler of the DDPM checkpoints.

# %%
UNET = dict(
  sample_size=8, in_channels=1, out_channels=1, layers_per_block=1, block_out_channels=(32, 64),
  down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"),
  norm_num_groups=8, attention_head_dim=16,
)  # fmt: skip
SCHEDULER = dict(num_train_timesteps=1000, beta_schedule="linear", clip_sample=False)

if torch is not None:
  torch.manual_seed(0)
  unet = UNet2DModel(**UNET).eval()
  DDIMPipeline(unet=unet, scheduler=DDIMScheduler(**SCHEDULER)).save_pretrained(FOLDER / "pipeline")
else:  # the same layout, written by jaxdiff: a diffusers folder all the same
  from jaxdiff.interop import unet_model_config
  from jaxdiff.models import create_model

  diffusers_config = {"_class_name": "UNet2DModel", **UNET}
  model = create_model({"model": unet_model_config(diffusers_config)})
  variables = model.init(jax.random.key(0), jnp.zeros((1, 8, 8, 1)), jnp.zeros(1, jnp.int32))
  save_diffusers_unet(model, variables, str(FOLDER / "pipeline" / "unet"), sample_size=8)
print(sorted(p.name for p in (FOLDER / "pipeline").iterdir()))

# %% [markdown]
# ## In: the network
#
# `load_diffusers_unet(folder)` gives a jaxdiff `UNet` and its variables; `model.apply` on NHWC
# images equals `UNet2DModel` on the NCHW transpose.

# %%
model, variables = load_diffusers_unet(str(FOLDER / "pipeline" / "unet"))
x = jax.random.normal(jax.random.key(1), (4, 8, 8, 1))
t = jnp.array([0, 250, 500, 999])
eps = model.apply(variables, x, t)
print("jaxdiff UNet output:", eps.shape)
if torch is not None:
  with torch.no_grad():
    ref = unet(nchw(x), torch.tensor(np.array(t))).sample
  print(
    "max |jaxdiff - diffusers|:", float(np.abs(np.asarray(eps) - ref.numpy().transpose(0, 2, 3, 1)).max())
  )

# %% [markdown]
# ## In: a training workdir
#
# `import_diffusers(pipeline, workdir)` (or `python -m jaxdiff.interop import`) writes a workdir:
# `config.json` with the scheduler mapped onto `diffusion.*` / `sample.*`, and an Orbax checkpoint at
# step 0 whose EMA weights are the pipeline's. `jaxdiff.load`, `sample.py` and `train.py` (to
# fine-tune) take it like any run.

# %%
workdir = str(FOLDER / "workdir")
config = import_diffusers(str(FOLDER / "pipeline"), workdir, data="digits")
print(
  config.diffusion.schedule,
  config.diffusion.num_timesteps,
  config.diffusion.prediction,
  config.sample.sampler,
)
run = jaxdiff.load(workdir)

# %% [markdown]
# ## The same samples on both sides
#
# DDIM from the same starting noise: jaxdiff's single `lax.scan` against the diffusers scheduler's
# Python loop. (The weights are random, so the "images" are noise; what counts is that they agree.)

# %%
noise = jax.random.normal(jax.random.key(2), (8, 8, 8, 1))
ours = jaxdiff.sample(
  run.model_fn, run.process, noise.shape, jax.random.key(3), sampler="ddim", num_steps=NUM_STEPS,
  prediction="eps", x_init=noise,
)  # fmt: skip

if torch is not None:
  scheduler = DDIMScheduler(**SCHEDULER)
  scheduler.set_timesteps(NUM_STEPS)
  sample = nchw(noise)
  with torch.no_grad():
    for step in scheduler.timesteps:
      sample = scheduler.step(unet(sample, step).sample, step, sample).prev_sample
  theirs = sample.numpy().transpose(0, 2, 3, 1)
  print(f"DDIM-{NUM_STEPS}, max |jaxdiff - diffusers|:", float(np.abs(np.asarray(ours) - theirs).max()))
  fig, axes = plt.subplots(2, 8, figsize=(8, 2.4))
  for i in range(8):
    axes[0, i].imshow(np.asarray(ours)[i, ..., 0], cmap="gray")
    axes[1, i].imshow(theirs[i, ..., 0], cmap="gray")
  for ax in axes.flat:
    ax.axis("off")
  axes[0, 0].set_title("jaxdiff", loc="left", fontsize=9)
  axes[1, 0].set_title("diffusers", loc="left", fontsize=9)
  plt.show()

# %% [markdown]
# ## Out: a pipeline folder again
#
# `export_workdir(workdir, out)` (or `python -m jaxdiff.interop export`) writes the newest
# checkpoint as a `DDIMPipeline` folder; `save_diffusers_unet(model, variables, folder)` writes a
# bare `UNet2DModel`. Both load with `from_pretrained` and give the same outputs.

# %%
export_workdir(workdir, str(FOLDER / "exported"))
print(sorted(p.name for p in (FOLDER / "exported").iterdir()))
model2, variables2 = load_diffusers_unet(str(FOLDER / "exported" / "unet"))
print(
  "jaxdiff -> diffusers -> jaxdiff, max difference:",
  float(jnp.abs(model2.apply(variables2, x, t) - eps).max()),
)
if torch is not None:
  pipeline = DDIMPipeline.from_pretrained(str(FOLDER / "exported"))
  with torch.no_grad():
    out = pipeline.unet(nchw(x), torch.tensor(np.array(t))).sample
  print(
    "exported UNet2DModel vs jaxdiff:",
    float(np.abs(out.numpy().transpose(0, 2, 3, 1) - np.asarray(eps)).max()),
  )
