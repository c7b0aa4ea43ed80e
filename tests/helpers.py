"""Small configs and random model variables shared by the tests (fast on 2 CPU cores)."""

import math
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

from jaxdiff.config_utils import load_config_file as _load

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_config_file(name: str):
  return _load(os.path.join(ROOT, "configs", f"{name}.py"))


def _fast_training(c, num_steps: int) -> None:
  """Batch 16, no warm-up, frequent logs and checkpoints, no sample grids, no compile cache."""
  c.train.batch_size = 16
  c.train.num_steps = num_steps
  c.train.log_every = 5
  c.train.checkpoint_every = 10
  c.train.sample_every = 0
  c.train.compilation_cache_dir = "none"
  c.optim.warmup_steps = 0
  c.optim.learning_rate = 1e-3


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
  _fast_training(c, num_steps)
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
  _fast_training(c, num_steps)
  c.sample.num_steps = 5
  return c


def random_params(model, *args, seed=0, **kwargs):
  """Variables of ``model`` with random values: shapes from ``jax.eval_shape`` (no compile),
  kernels ~ N(0, 1/fan_in), biases ~ N(0, 0.1), norm scales ~ 1 + N(0, 0.1), tables and null
  tokens ~ N(0, 1)."""
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), *args, **kwargs))
  rng = np.random.default_rng(seed)

  def draw(path, leaf):
    name = str(path[-1].key)
    z = rng.standard_normal(leaf.shape).astype(np.float32)
    if name == "kernel":
      return jnp.asarray(z / math.sqrt(math.prod(leaf.shape[:-1])), leaf.dtype)
    if name == "scale":
      return jnp.asarray(1 + 0.1 * z, leaf.dtype)
    if name == "bias":
      return jnp.asarray(0.1 * z, leaf.dtype)
    return jnp.asarray(z, leaf.dtype)

  return jax.tree_util.tree_map_with_path(draw, shapes)


def tiny_train_cmd(workdir, *extra) -> list[str]:
  """`train.py` on the 2-D S-curve with a tiny MLP (batch 16, no sample grids, no compilation
  cache, no warm-up), for tests that run the CLI in a subprocess; `extra` flags are appended."""
  return [
    sys.executable,
    os.path.join(ROOT, "train.py"),
    f"--config={ROOT}/configs/default.py",
    f"--workdir={workdir}",
    "--config.model.name=mlp",
    "--config.model.hidden_dim=32",
    "--config.model.num_layers=2",
    "--config.model.num_classes=0",
    "--config.data.name=toy2d/s_curve",
    "--config.data.num_classes=0",
    "--config.train.batch_size=16",
    "--config.train.sample_every=0",
    "--config.train.compilation_cache_dir=none",
    "--config.optim.warmup_steps=0",
    *extra,
  ]


def documented_text() -> str:
  """README.md, then every guide of the documentation site (docs/guides/*.md, in name order): the text
  whose code blocks and commands the tests run, wherever a section moved."""
  guides = os.path.join(ROOT, "docs", "guides")
  paths = [os.path.join(ROOT, "README.md")]
  paths += [os.path.join(guides, n) for n in sorted(os.listdir(guides)) if n.endswith(".md")]
  return "\n\n".join(open(p).read() for p in paths)
