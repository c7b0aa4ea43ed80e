"""CIFAR-10 32x32x3 with conditional flow matching / rectified flow.

Taken from Flow Matching (Lipman et al. 2023, Table 3, CIFAR-10): the OT path x_t = (1 - t) x0
+ t eps with velocity prediction, Adam lr 5e-4, batch 128, dropout 0.1, EMA 0.9999, 391k
iterations, on the DDPM-size UNet of configs/cifar10.py (35.7M parameters, their U-Net is
ADM's). Taken from SD3 (Esser et al. 2024): logit-normal t (m = 0, s = 1), which they found best
among the time samplings. Sampling: Heun on the flow grid, 20 steps (39 NFE); the paper's
adaptive dopri5 is not in jaxdiff.
"""

import ml_collections

from jaxdiff.config_utils import sibling_config


def get_config() -> ml_collections.ConfigDict:
  config = sibling_config(__file__, "cifar10")

  f = config.diffusion
  f.process = "flow"
  f.prediction = "flow"
  f.time_sampling = "logit_normal"

  t = config.train
  t.num_steps = 391_000

  config.optim.learning_rate = 5e-4

  s = config.sample
  s.sampler = "heun"
  s.num_steps = 20
  return config
