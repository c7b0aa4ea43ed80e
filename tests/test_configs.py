"""Every config in configs/ loads by path (as train.py does), builds its network through
create_model and gives outputs of the data's shape in float32; the CIFAR-10 network is the
DDPM paper's (35.7M parameters). Big networks are only traced (jax.eval_shape), never run."""

import ast
import pathlib
import re

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


# ---------------------------------------------------------------- one source of truth


def test_configs_build_on_the_package_default():
  """configs/default.py is the package's default; the recipes override only what differs."""
  from jaxdiff.configs import default, digits

  assert load_config("default").to_dict() == default.get_config().to_dict()
  assert load_config("digits").to_dict() == digits.get_config().to_dict()
  base = default.get_config()
  sections = {"d": "data", "m": "model", "f": "diffusion", "t": "train", "o": "optim", "s": "sample"}
  for name in ("mnist", "cifar10", "celeba64", "toy2d"):
    text = (CONFIG_DIR / f"{name}.py").read_text()
    assert "from jaxdiff.configs import default" in text and "sibling_config" not in text
    for sec, field, value in re.findall(r"^  (\w)\.(\w+) = ([^#\n]+)$", text, re.M):
      assert base[sections[sec]][field] != ast.literal_eval(value), f"{name}: {field} repeats the default"


def test_old_config_json_upgrades_with_a_note(tmp_path, caplog):
  """A workdir written before some fields existed loads with their defaults, and says which."""
  import json
  import logging

  from jaxdiff.configs import default
  from jaxdiff.training.run_records import load_config as load_workdir_config

  old = load_config("digits").to_dict()
  del old["model"]["context_dim"], old["train"]["context_dropout"], old["eval"]
  (tmp_path / "config.json").write_text(json.dumps(old))
  with caplog.at_level(logging.WARNING):
    config = load_workdir_config(str(tmp_path))
  assert config.model.context_dim == 0 and config.train.context_dropout == -1.0
  assert config.eval.to_dict() == default.get_config().eval.to_dict()
  assert config.model.channel_mult == (1, 2)  # lists come back as tuples
  assert config.model.base_channels == 32  # the saved values win
  note = caplog.text
  assert "model.context_dim" in note and "train.context_dropout" in note and "eval" in note
  from jaxdiff.config_utils import validate_config

  validate_config(config)


def test_misspelled_or_missing_field_fails_naming_it():
  from jaxdiff.config_utils import ConfigError, validate_config, with_defaults

  c = load_config("digits")
  c.model.num_class = 10
  with pytest.raises(
    ConfigError, match=r"config\.model\.num_class .*did you mean config\.model\.num_classes"
  ):
    validate_config(c)
  c = load_config("digits")
  del c.sample["spacing"]
  with pytest.raises(ConfigError, match=r"config\.sample\.spacing is missing"):
    validate_config(c)
  validate_config(with_defaults(c))  # completed, it is valid again


def test_validation_takes_the_choices_from_their_owners(monkeypatch):
  """validate_config reads the owners' tuples at call time (never a copied literal list)."""
  from jaxdiff import diffusion, samplers
  from jaxdiff.config_utils import ConfigError, validate_config

  c = load_config("digits")
  c.sample.sampler = "brand_new"
  with pytest.raises(ConfigError, match=r"config\.sample\.sampler='brand_new'"):
    validate_config(c)
  monkeypatch.setattr(samplers, "SAMPLERS", tuple(samplers.SAMPLERS) + ("brand_new",))
  validate_config(c)
  c.diffusion.weighting = "new_weighting"
  with pytest.raises(ConfigError, match="diffusion.weighting"):
    validate_config(c)
  monkeypatch.setattr(diffusion, "WEIGHTINGS", tuple(diffusion.WEIGHTINGS) + ("new_weighting",))
  validate_config(c)
  c.diffusion.schedule = "exp"
  with pytest.raises(ConfigError, match=r"config\.diffusion\.schedule='exp'.*linear"):
    validate_config(c)
  c.diffusion.schedule = "cosine"
  c.model.name = "transformer"
  with pytest.raises(ConfigError, match=r"config\.model\.name.*\('unet', 'mlp'"):
    validate_config(c)


def test_create_model_takes_a_model_section_alone():
  model = create_model({"name": "mlp", "hidden_dim": 16, "num_layers": 1})
  assert isinstance(model, MLP) and (model.hidden_dim, model.num_layers, model.in_channels) == (16, 1, 2)
  assert model.num_timesteps == 1000  # from the default diffusion section
  unet = create_model({"model": {"base_channels": 8, "channel_mult": [1, 2]}, "data": {"channels": 3}})
  assert unet.in_channels == 3 and unet.channel_mult == (1, 2) and unet.num_groups == 32
