"""The digits demo as a MeanFlow model (Geng et al. 2025): one network evaluation per sample.

The demo's UNet with a second time (model.second_time: it also embeds t - r) learns the average
velocity u(x_t, r, t) of rectified flow (prediction "mean_velocity"), trained with the MeanFlow
identity target (one jax.jvp per step). The (r, t) sampling and loss weight are the paper's
CIFAR-10 settings, which suit this small network and data set better than its ImageNet ones
(logit-normal(-0.4, 1), r < t on a quarter of the batch, p = 1; benchmarks/BENCHMARKS.md compares
them): two times logit-normal(-2, 2), r < t on three quarters of the batch, adaptive loss
weight p = 0.75; 4,000 steps (the demo's 2,500 left two-step samples at about the held-out
figure; BENCHMARKS.md has both). Sampled with the `meanflow` sampler: one step (t = 1 -> 0), or
two (1 -> 1/2 -> 0).

Both times enter through Fourier features of t itself with frequencies of order one
(model.time_embedding="fourier", fourier_scale=1), not the flow recipes' sinusoids of 1000 t:
the MeanFlow target holds the network's own du/dt, and with features that turn by hundreds of
radians per unit of t that derivative dominates the target and the r < t residual grows instead
of falling (BENCHMARKS.md, "One- and two-step models").

    python train.py --config=configs/digits_meanflow.py --workdir=runs/digits_meanflow
    python sample.py --workdir=runs/digits_meanflow --num_samples=1000 --num_steps=1
"""

import ml_collections

from jaxdiff.configs import digits


def get_config() -> ml_collections.ConfigDict:
  config = digits.get_config()
  config.model.second_time = True
  config.model.time_embedding = "fourier"  # smooth in t: du/dt is part of the target
  config.model.fourier_scale = 1.0
  f = config.diffusion
  f.process = "flow"
  f.prediction = "mean_velocity"
  fs = config.few_step
  fs.method = "meanflow"
  fs.ratio = 0.75
  fs.logit_mean = -2.0
  fs.logit_std = 2.0
  fs.adaptive_p = 0.75
  config.train.num_steps = 4000  # 1.6x the demo's steps at ~1.13x its step time: within twice its cost
  s = config.sample
  s.sampler = "meanflow"
  s.num_steps = 1
  s.grid = "uniform"
  return config
