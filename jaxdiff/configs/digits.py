"""The embedded demo: class-conditional 8x8 digits (scikit-learn's 1797 images) on a CPU.

A small UNet: 32 base channels, channel_mult (1, 2) (8x8, 4x4), 1 residual block per level
(2 in the decoder), 4-head attention at 4x4 and in the middle, 8 GroupNorm groups (32 would
leave 1 channel per group at this width), average-pool / nearest resampling without convs
(the 64-channel conv after upsampling to 8x8 would add a sixth to the FLOPs): 656,577
parameters. The 2500 steps give clearly recognisable digits of every class (the loss
flattens after about 1000 steps). Labels are dropped 10% of the time so that the same network
serves classifier-free guidance.

Its data ship with the package, so the recipe does too (configs/digits.py is this file's
`get_config`); configs/digits_context.py and configs/digits_sr.py start from it.
"""

import ml_collections

from jaxdiff.configs import default


def get_config() -> ml_collections.ConfigDict:
  config = default.get_config()

  d = config.data
  d.name = "digits"
  d.image_size = 8
  d.channels = 1
  d.num_classes = 10
  d.random_flip = False  # never flip digits

  m = config.model
  m.base_channels = 32
  m.channel_mult = (1, 2)  # 8x8, 4x4
  m.num_res_blocks = 1
  m.attention_resolutions = (4,)
  m.conv_resample = False  # 2x2 average pooling down, nearest-neighbour up
  m.num_groups = 8
  m.in_channels = 1
  m.num_classes = 10  # label 10 is the null class for guidance

  t = config.train
  t.batch_size = 128
  t.num_steps = 2500
  t.checkpoint_every = 500
  t.sample_every = 500
  t.num_sample_images = 100  # a 10x10 grid, one row per digit
  t.label_dropout = 0.1

  o = config.optim
  o.learning_rate = 1e-3
  o.warmup_steps = 200

  config.ema.decay = 0.999  # a short run: a 1000-step EMA window

  s = config.sample
  s.sampler = "ddim"
  s.num_steps = 50
  s.batch_size = 100
  return config
