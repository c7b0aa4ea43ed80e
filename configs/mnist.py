"""MNIST 28x28x1, class-conditional (10 digits plus the null class for guidance).

Network: 64 base channels, channel_mult (1, 2, 2) (28, 14, 7), 2 residual blocks per level,
4-head attention at 14x14 and in the middle, dropout 0.1: a DDPM-style UNet sized for a
single GPU or a TPU host. Linear schedule, eps-prediction, Adam lr 2e-4, EMA 0.9999.
"""

import ml_collections

from jaxdiff.config_utils import sibling_config


def get_config() -> ml_collections.ConfigDict:
  config = sibling_config(__file__, "default")

  d = config.data
  d.name = "tfds/mnist"
  d.image_size = 28
  d.channels = 1
  d.num_classes = 10
  d.random_flip = False  # flipped digits are not digits

  m = config.model
  m.name = "unet"
  m.base_channels = 64
  m.channel_mult = (1, 2, 2)  # 28, 14, 7 (28 is divisible by 2**2 only)
  m.num_res_blocks = 2
  m.attention_resolutions = (14,)
  m.num_heads = 4
  m.head_dim = -1
  m.dropout = 0.1
  m.num_groups = 32
  m.in_channels = 1
  m.out_channels = -1
  m.num_classes = 10

  t = config.train
  t.batch_size = 128
  t.num_steps = 100_000
  t.checkpoint_every = 5000
  t.sample_every = 5000
  t.num_sample_images = 100
  t.label_dropout = 0.1

  o = config.optim
  o.learning_rate = 2e-4
  o.warmup_steps = 1000

  config.ema.decay = 0.9999

  s = config.sample
  s.sampler = "ddim"
  s.num_steps = 50
  s.guidance_scale = 1.0
  return config
