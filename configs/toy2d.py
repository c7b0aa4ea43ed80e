"""2-D toy data (the S-curve) with the residual MLP: the "diffusion in a minute" tutorial.

A 4-block, 128-wide MLP with a sinusoidal time embedding (about 0.2M parameters) trains on an
endless stream of fresh S-curve points in about a minute on 2 CPU cores. Sampling does not
clip the predicted x0 (the points are not confined to [-1, 1]).
"""

import ml_collections

from jaxdiff.config_utils import sibling_config


def get_config() -> ml_collections.ConfigDict:
  config = sibling_config(__file__, "default")

  d = config.data
  d.name = "toy2d/s_curve"
  d.num_classes = 0
  d.random_flip = False
  d.toy2d_num_points = 0  # fresh points every batch

  m = config.model
  m.name = "mlp"
  m.data_dim = 2
  m.hidden_dim = 128
  m.num_layers = 4
  m.time_embedding = "sinusoidal"
  m.dropout = 0.0
  m.out_channels = -1  # = data_dim
  m.learn_sigma = False
  m.num_classes = 0
  m.self_condition = False

  f = config.diffusion
  f.schedule = "linear"
  f.num_timesteps = 1000
  f.prediction = "eps"

  t = config.train
  t.batch_size = 256
  t.num_steps = 10_000
  t.log_every = 500
  t.checkpoint_every = 5000
  t.sample_every = 5000
  t.num_sample_images = 2000  # points in each periodic scatter plot
  t.label_dropout = 0.0

  o = config.optim
  o.learning_rate = 1e-3
  o.warmup_steps = 100
  o.schedule = "cosine"

  config.ema.decay = 0.999  # a short run: a 1000-step EMA window

  s = config.sample
  s.sampler = "ddpm"
  s.num_steps = 1000  # cheap for 2-D points; ancestral sampling resolves the thin curve
  s.clip_x0 = 0.0  # 2-D points are not confined to [-1, 1]
  s.batch_size = 2000

  config.eval.num_samples = 2000
  return config
