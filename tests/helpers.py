"""Small configs shared by the training and sampling tests (fast on 2 CPU cores)."""

import os

from jaxdiff.config_utils import load_config_file as _load

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_config_file(name: str):
  return _load(os.path.join(ROOT, "configs", f"{name}.py"))


def tiny_points_config(num_steps: int = 20):
  """An MLP on the S-curve: compiles in about a second."""
  c = load_config_file("default")
  c.model.name = "mlp"
  c.model.hidden_dim = 32
  c.model.num_layers = 2
  c.model.num_classes = 0
  c.data.name = "toy2d/s_curve"
  c.data.num_classes = 0
  c.data.image_size = 0
  c.data.channels = 0
  c.train.batch_size = 16
  c.train.num_steps = num_steps
  c.train.log_every = 5
  c.train.checkpoint_every = 10
  c.train.sample_every = 0
  c.train.compilation_cache_dir = "none"
  c.optim.warmup_steps = 0
  c.optim.learning_rate = 1e-3
  c.ema.decay = 0.9
  c.sample.clip_x0 = 0.0
  c.sample.num_steps = 10
  return c


def tiny_image_config(num_steps: int = 20):
  """A very small class-conditional UNet on the 8x8 digits."""
  c = load_config_file("default")
  c.model.base_channels = 8
  c.model.channel_mult = (1, 2)
  c.model.num_res_blocks = 1
  c.model.attention_resolutions = (4,)
  c.model.num_groups = 4
  c.model.num_heads = 1
  c.model.num_classes = 10
  c.train.batch_size = 16
  c.train.num_steps = num_steps
  c.train.log_every = 5
  c.train.checkpoint_every = 10
  c.train.sample_every = 0
  c.train.compilation_cache_dir = "none"
  c.optim.warmup_steps = 0
  c.optim.learning_rate = 1e-3
  c.sample.num_steps = 5
  return c
