"""Every config in configs/ loads by path (as train.py does), builds its network through
create_model and gives outputs of the data's shape in float32; the CIFAR-10 network is the
DDPM paper's (35.7M parameters). Big networks are only traced (jax.eval_shape), never run."""

import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdiff.config_utils import load_config_file
from jaxdiff.models import MLP, UNet, count_params, create_model, dummy_inputs

pytestmark = pytest.mark.usefixtures("fast_compiles")


CONFIG_DIR = pathlib.Path(__file__).resolve().parents[1] / "configs"
CONFIGS = ["digits", "toy2d", "mnist", "cifar10", "celeba64", "digits_context", "digits_sr"]


def load_config(name: str):
  """Load configs/<name>.py by file path, the way ml_collections' config_flags does."""
  return load_config_file(str(CONFIG_DIR / f"{name}.py"))


def traced(config, batch_size=2):
  """(variables, output) shapes of the config's network, traced without compiling."""
  model = create_model(config)
  x, t, kwargs = dummy_inputs(config, batch_size)
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), x, t, **kwargs))
  out = jax.eval_shape(lambda v: model.apply(v, x, t, **kwargs), variables)
  return model, x, variables, out


@pytest.mark.parametrize("name", CONFIGS)
def test_config_builds_with_output_shape_and_dtype(name):
  config = load_config(name)
  model, x, variables, out = traced(config)
  assert out.shape == x.shape and out.dtype == jnp.float32
  assert {leaf.dtype for leaf in jax.tree.leaves(variables)} == {jnp.dtype(jnp.float32)}
  if config.model.name == "mlp":
    assert isinstance(model, MLP) and x.shape == (2, config.model.data_dim)
  else:
    assert isinstance(model, UNet)
    size, channels = config.data.image_size, config.data.channels
    assert x.shape == (2, size, size, channels)
    assert config.model.in_channels == channels
    assert size % 2 ** (len(config.model.channel_mult) - 1) == 0


@pytest.mark.parametrize("name", CONFIGS)
def test_config_shares_the_default_fields(name):
  """Each config starts from configs/default.py: every base field exists with the same type."""
  base = load_config("default")
  config = load_config(name)
  for section in base.keys():
    if not hasattr(base[section], "keys"):
      continue
    for key in base[section].keys():
      assert key in config[section], f"{name}: {section}.{key} missing"
      assert type(config[section][key]) is type(base[section][key]), f"{name}: {section}.{key}"


def test_cifar10_is_the_ddpm_network():
  config = load_config("cifar10")
  m = config.model
  assert (m.base_channels, tuple(m.channel_mult), m.num_res_blocks) == (128, (1, 2, 2, 2), 2)
  assert tuple(m.attention_resolutions) == (16,) and m.num_heads == 1 and m.dropout == 0.1
  _, _, variables, _ = traced(config, batch_size=1)
  assert abs(count_params(variables["params"]) - 35.7e6) <= 0.01 * 35.7e6
  assert config.data.name == "tfds/cifar10" and config.data.random_flip
  assert (config.optim.learning_rate, config.train.batch_size, config.optim.warmup_steps) == (2e-4, 128, 5000)
  assert (config.optim.grad_clip, config.ema.decay, config.train.num_steps) == (1.0, 0.9999, 800_000)
  f = config.diffusion
  assert (f.schedule, f.num_timesteps, f.beta_start, f.beta_end) == ("linear", 1000, 1e-4, 0.02)


def test_data_fields_per_config():
  digits, toy, mnist, celeba = (load_config(n) for n in ("digits", "toy2d", "mnist", "celeba64"))
  assert (digits.data.name, digits.data.image_size, digits.data.channels) == ("digits", 8, 1)
  assert digits.data.num_classes == digits.model.num_classes == 10
  assert (toy.data.name, toy.model.name, toy.model.data_dim) == ("toy2d/s_curve", "mlp", 2)
  assert toy.data.num_classes == toy.model.num_classes == 0 and toy.sample.clip_x0 == 0
  assert (mnist.data.name, mnist.data.image_size, mnist.data.channels) == ("tfds/mnist", 28, 1)
  assert mnist.model.num_classes == 10
  assert (celeba.data.name, celeba.data.image_size, celeba.data.channels) == ("tfds/celeb_a", 64, 3)
  assert celeba.data.center_crop


@pytest.mark.parametrize("name", ["digits", "toy2d"])
def test_small_configs_run(name):
  """The CPU configs really initialise and run (float32 out, zero at initialisation)."""
  config = load_config(name)
  model = create_model(config)
  x, t, kwargs = dummy_inputs(config, batch_size=3)
  x = jax.random.normal(jax.random.key(1), x.shape)
  t = jnp.array([0, 500, 999], jnp.int32)

  @jax.jit
  def run(x, t, kwargs):
    variables = model.init(jax.random.key(0), x, t, **kwargs)
    return variables, model.apply(variables, x, t, train=True, rngs={"dropout": jax.random.key(2)}, **kwargs)

  variables, out = run(x, t, kwargs)
  assert out.shape == x.shape and out.dtype == jnp.float32
  np.testing.assert_array_equal(out, 0.0)
  assert count_params(variables["params"]) > 0
