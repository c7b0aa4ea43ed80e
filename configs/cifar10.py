"""CIFAR-10 32x32x3, exactly the DDPM paper's setup (Ho et al. 2020, `run_cifar.py`).

Network: 128 base channels, channel_mult (1, 2, 2, 2), 2 residual blocks per level, single-head
self-attention at 16x16 (and in the middle), dropout 0.1, additive time conditioning, strided
conv downsampling, nearest + conv upsampling: 35,746,307 parameters, the paper's 35.7M.
Training: Adam lr 2e-4, batch 128, 5000 warm-up steps, gradient clipping at 1, EMA 0.9999,
random horizontal flips, 800k steps; linear betas 1e-4..0.02 over T = 1000, eps-prediction with
the plain L2 loss; unconditional (the labels are in the data set but unused).
"""

import ml_collections

from jaxdiff.configs import default


def get_config() -> ml_collections.ConfigDict:
  config = default.get_config()

  d = config.data
  d.name = "tfds/cifar10"
  d.image_size = 32
  d.channels = 3
  d.num_classes = 10  # present in the data; the DDPM model ignores them
  d.random_flip = True

  m = config.model
  m.base_channels = 128
  m.channel_mult = (1, 2, 2, 2)  # 32, 16, 8, 4
  m.num_heads = 1  # DDPM's attention is single-head
  m.dropout = 0.1
  m.in_channels = 3
  m.num_classes = 0  # unconditional, as in the paper

  t = config.train
  t.num_steps = 800_000
  t.checkpoint_every = 10_000
  t.sample_every = 10_000
  t.label_dropout = 0.0  # unconditional: no labels to drop

  config.optim.warmup_steps = 5000  # the rest of the paper's set-up is the default config

  s = config.sample
  s.sampler = "ddpm"  # the paper's FID 3.17 is 1000-step ancestral sampling
  s.num_steps = 1000

  config.eval.num_samples = 50_000
  return config
