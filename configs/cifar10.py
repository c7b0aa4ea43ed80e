"""CIFAR-10 32x32x3, exactly the DDPM paper's setup (Ho et al. 2020, `run_cifar.py`).

Network: 128 base channels, channel_mult (1, 2, 2, 2), 2 residual blocks per level, single-head
self-attention at 16x16 (and in the middle), dropout 0.1, additive time conditioning, strided
conv downsampling, nearest + conv upsampling: 35,746,307 parameters, the paper's 35.7M.
Training: Adam lr 2e-4, batch 128, 5000 warm-up steps, gradient clipping at 1, EMA 0.9999,
random horizontal flips, 800k steps; linear betas 1e-4..0.02 over T = 1000, eps-prediction with
the plain L2 loss; unconditional (the labels are in the data set but unused).
"""

import ml_collections

from jaxdiff.config_utils import sibling_config


def get_config() -> ml_collections.ConfigDict:
  config = sibling_config(__file__, "default")

  d = config.data
  d.name = "tfds/cifar10"
  d.image_size = 32
  d.channels = 3
  d.num_classes = 10  # present in the data; the DDPM model ignores them
  d.random_flip = True

  m = config.model
  m.name = "unet"
  m.base_channels = 128
  m.channel_mult = (1, 2, 2, 2)  # 32, 16, 8, 4
  m.num_res_blocks = 2
  m.attention_resolutions = (16,)
  m.linear_attention_resolutions = ()
  m.num_heads = 1  # DDPM's attention is single-head
  m.head_dim = -1
  m.dropout = 0.1
  m.resblock_updown = False
  m.conv_resample = True
  m.use_scale_shift_norm = False
  m.num_groups = 32
  m.in_channels = 3
  m.out_channels = -1
  m.learn_sigma = False
  m.num_classes = 0  # unconditional, as in the paper
  m.self_condition = False

  f = config.diffusion
  f.schedule = "linear"
  f.num_timesteps = 1000
  f.beta_start = 1e-4
  f.beta_end = 0.02
  f.prediction = "eps"
  f.loss_type = "l2"
  f.weighting = "none"

  t = config.train
  t.batch_size = 128
  t.num_steps = 800_000
  t.log_every = 100
  t.checkpoint_every = 10_000
  t.sample_every = 10_000
  t.label_dropout = 0.0  # unconditional: no labels to drop

  o = config.optim
  o.optimizer = "adam"
  o.learning_rate = 2e-4
  o.warmup_steps = 5000
  o.schedule = "constant"
  o.grad_clip = 1.0

  config.ema.decay = 0.9999

  s = config.sample
  s.sampler = "ddpm"  # the paper's FID 3.17 is 1000-step ancestral sampling
  s.num_steps = 1000
  s.batch_size = 256

  config.eval.num_samples = 50_000
  return config
