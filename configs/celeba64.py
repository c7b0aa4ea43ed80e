"""CelebA 64x64x3 (centre-cropped faces) with an improved-DDPM-style network.

Network: 128 base channels, channel_mult (1, 2, 3, 4) (64, 32, 16, 8), 2 residual blocks per
level, 64-channel attention heads at 16x16 and 8x8, FiLM (scale-shift) time conditioning,
BigGAN-style residual up/down-sampling, dropout 0.1 (Nichol & Dhariwal 2021 / ADM choices at a
single-GPU-friendly size). Cosine noise schedule, eps-prediction, Adam lr 1e-4, EMA 0.9999.
Unconditional: CelebA's 40 attributes are not class labels.
"""

import ml_collections

from jaxdiff.configs import default


def get_config() -> ml_collections.ConfigDict:
  config = default.get_config()

  d = config.data
  d.name = "tfds/celeb_a"
  d.image_size = 64
  d.channels = 3
  d.num_classes = 0
  d.center_crop = True  # centre square crop of the 178x218 images before resizing
  d.random_flip = True

  m = config.model
  m.base_channels = 128
  m.channel_mult = (1, 2, 3, 4)  # 64, 32, 16, 8
  m.attention_resolutions = (16, 8)
  m.head_dim = 64  # heads = channels // 64 (overrides num_heads)
  m.dropout = 0.1
  m.resblock_updown = True
  m.use_scale_shift_norm = True
  m.in_channels = 3
  m.learn_sigma = False  # set True only with a loss that trains the variance (L_vlb)

  f = config.diffusion
  f.schedule = "cosine"

  t = config.train
  t.num_steps = 500_000
  t.checkpoint_every = 10_000
  t.sample_every = 10_000
  t.label_dropout = 0.0

  o = config.optim
  o.learning_rate = 1e-4
  o.warmup_steps = 5000

  s = config.sample
  s.num_steps = 100
  s.batch_size = 128

  config.eval.num_samples = 10_000
  return config
