"""CIFAR-10 32x32x3 with EDM (Karras et al. 2022), the paper's unconditional VP/DDPM++ recipe
adapted to jaxdiff's UNet.

Taken from EDM (Table 7 and `train.py`'s cifar10 preset): preconditioning with sigma_data 0.5,
log-normal sigma (P_mean -1.2, P_std 1.2) and the lambda(sigma) weighting; Adam lr 1e-3 with a
linear warm-up over 10 Mimg (19,500 steps at batch 512), batch 512, dropout 0.13, EMA half-life
0.5 Mimg (decay 0.9993 per step at batch 512), 200 Mimg of training (390k steps); sampling with
Heun on the Karras grid, sigma 0.002..80, rho 7, 18 steps (35 NFE; FID 1.97 in the paper).
Network: DDPM++'s widths on our UNet: 128 base channels, channel_mult (2, 2, 2), 4 residual
blocks per level, attention at 16x16, FiLM (scale-shift) time conditioning, the sinusoidal
embedding of 1000 c_noise. Not taken: EDM's geometric augmentation pipeline (jaxdiff has only
flips) and its redesigned layers, so the paper's FID is a target, not a promise.
"""

import ml_collections

from jaxdiff.config_utils import sibling_config


def get_config() -> ml_collections.ConfigDict:
  config = sibling_config(__file__, "cifar10")

  m = config.model
  m.channel_mult = (2, 2, 2)  # DDPM++: 32, 16, 8
  m.num_res_blocks = 4
  m.dropout = 0.13
  m.use_scale_shift_norm = True
  m.num_heads = 4  # channels per head 64 at 256 channels

  f = config.diffusion
  f.process = "edm"
  f.prediction = "edm"
  f.weighting = "edm"
  f.sigma_data = 0.5  # EDM's value

  t = config.train
  t.batch_size = 512
  t.num_steps = 390_000

  o = config.optim
  o.learning_rate = 1e-3
  o.warmup_steps = 19_500
  o.grad_clip = 0.0

  config.ema.decay = 0.9993
  config.ema.warmup = False

  s = config.sample
  s.sampler = "heun"
  s.num_steps = 18
  return config
