"""MNIST 28x28x1, class-conditional (10 digits plus the null class for guidance).

Network: 64 base channels, channel_mult (1, 2, 2) (28, 14, 7), 2 residual blocks per level,
4-head attention at 14x14 and in the middle, dropout 0.1: a DDPM-style UNet sized for a
single GPU or a TPU host. Linear schedule, eps-prediction, Adam lr 2e-4, EMA 0.9999.
"""

import ml_collections

from jaxdiff.configs import default


def get_config() -> ml_collections.ConfigDict:
  config = default.get_config()

  d = config.data
  d.name = "tfds/mnist"
  d.image_size = 28
  d.random_flip = False  # flipped digits are not digits

  m = config.model
  m.channel_mult = (1, 2, 2)  # 28, 14, 7 (28 is divisible by 2**2 only)
  m.attention_resolutions = (14,)
  m.dropout = 0.1
  m.in_channels = 1
  m.num_classes = 10

  t = config.train
  t.num_steps = 100_000
  t.checkpoint_every = 5000
  t.sample_every = 5000
  t.num_sample_images = 100

  o = config.optim
  o.warmup_steps = 1000

  return config
