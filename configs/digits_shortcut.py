"""The digits demo as a shortcut model (Frans et al. 2024): one or two network evaluations per sample.

The demo's UNet with a second time (model.second_time) is conditioned on its step size d = t - r
and predicts the average velocity over the step (prediction "mean_velocity"): flow matching at
d = 0 on three quarters of the batch, self-consistency targets for 2d from two steps of d
(d = 1/128 ... 1/2) on the rest. Sampled with the `shortcut` sampler on a uniform grid.

    python train.py --config=configs/digits_shortcut.py --workdir=runs/digits_shortcut
    python sample.py --workdir=runs/digits_shortcut --num_samples=1000 --num_steps=1
"""

import ml_collections

from jaxdiff.configs import digits


def get_config() -> ml_collections.ConfigDict:
  config = digits.get_config()
  config.model.second_time = True
  f = config.diffusion
  f.process = "flow"
  f.prediction = "mean_velocity"
  f.time_sampling = "logit_normal"
  fs = config.few_step
  fs.method = "shortcut"
  fs.fraction = 0.25
  fs.max_log2 = 7
  s = config.sample
  s.sampler = "shortcut"
  s.num_steps = 1
  s.grid = "uniform"
  return config
