"""jaxdiff.models.AutoencoderKL against diffusers' AutoencoderKL (torch CPU, random weights), both ways."""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.numpy

from jaxdiff.config_utils import load_config_file
from jaxdiff.errors import CheckpointError, ConfigError
from jaxdiff.interop import load_diffusers_vae, save_diffusers_vae
from jaxdiff.models import AutoencoderKL
from jaxdiff.models.autoencoder import decode_latents, denormalize_latents, encode_images, normalize_latents

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

SIZE = 16
# small instances of the layouts in use: SD 1.x/2.x (quant convs, 4 channels), SDXL (its scaling
# factor, more blocks per level), SD3 / Flux (16 channels, no quant convs, a shift factor)
LAYOUTS = {
  "sd": dict(block_out_channels=(16, 32), layers_per_block=1, latent_channels=4, norm_num_groups=8),
  "sdxl": dict(
    block_out_channels=(16, 16, 32),
    layers_per_block=2,
    latent_channels=4,
    norm_num_groups=8,
    scaling_factor=0.13025,
  ),
  "sd3_flux": dict(
    block_out_channels=(16, 32),
    layers_per_block=1,
    latent_channels=16,
    norm_num_groups=8,
    use_quant_conv=False,
    use_post_quant_conv=False,
    scaling_factor=1.5305,
    shift_factor=0.0609,
  ),
  "no_mid_attention": dict(
    block_out_channels=(16, 32),
    layers_per_block=1,
    latent_channels=4,
    norm_num_groups=8,
    mid_block_add_attention=False,
  ),
}
ATOL = 5e-5  # float32 rounding of convolutions summed in another order


def _torch_vae(layout: dict, seed: int = 0):
  torch.manual_seed(seed)
  levels = len(layout["block_out_channels"])
  model = diffusers.AutoencoderKL(
    **layout,
    sample_size=SIZE,
    down_block_types=("DownEncoderBlock2D",) * levels,
    up_block_types=("UpDecoderBlock2D",) * levels,
  ).eval()
  with torch.no_grad():  # away from diffusers' init (GroupNorm at 1 / 0) so every tensor matters
    for p in model.parameters():
      p.add_(0.05 * torch.randn_like(p))
  return model


def _inputs(layout: dict, batch: int = 2):
  rng = np.random.RandomState(0)
  x = rng.uniform(-1, 1, (batch, SIZE, SIZE, 3)).astype(np.float32)
  f = 2 ** (len(layout["block_out_channels"]) - 1)
  z = rng.randn(batch, SIZE // f, SIZE // f, layout["latent_channels"]).astype(np.float32)
  return x, z


def _nchw(a):
  return torch.from_numpy(np.ascontiguousarray(a.transpose(0, 3, 1, 2)))


def _torch_outputs(model, x, z):
  with torch.no_grad():
    post = model.encode(_nchw(x)).latent_dist
    dec = model.decode(_nchw(z)).sample
  return [t.numpy().transpose(0, 2, 3, 1) for t in (post.mean, post.logvar, dec)]


def _jax_outputs(model, variables, x, z):
  mean, logvar = model.apply(variables, x, method=model.encode)
  return [np.asarray(a) for a in (mean, logvar, model.apply(variables, z, method=model.decode))]


def _assert_close(ours, theirs):
  for name, a, b in zip(("mean", "logvar", "decoded"), ours, theirs):
    assert a.shape == b.shape, name
    np.testing.assert_allclose(a, b, atol=ATOL, rtol=1e-4, err_msg=name)


@pytest.mark.parametrize("name", list(LAYOUTS))
def test_loaded_diffusers_vae_encodes_and_decodes_as_diffusers(name, tmp_path):
  layout = LAYOUTS[name]
  theirs = _torch_vae(layout)
  theirs.save_pretrained(tmp_path / "vae")
  model, variables = load_diffusers_vae(str(tmp_path / "vae"))
  assert model.scaling_factor == pytest.approx(theirs.config.scaling_factor)
  assert model.shift_factor == theirs.config.shift_factor
  x, z = _inputs(layout)
  _assert_close(_jax_outputs(model, variables, x, z), _torch_outputs(theirs, x, z))


@pytest.mark.parametrize("name", ["sd", "sd3_flux"])
def test_saved_jaxdiff_vae_is_read_by_diffusers_with_the_same_outputs(name, tmp_path):
  layout = LAYOUTS[name]
  model = AutoencoderKL(**layout, sample_size=SIZE)
  x, z = _inputs(layout)
  variables = model.init({"params": jax.random.key(3), "latent": jax.random.key(4)}, x)
  # move every parameter off its initial value (zero-initialised projections included)
  leaves, tree = jax.tree_util.tree_flatten(variables)
  keys = jax.random.split(jax.random.key(5), len(leaves))
  variables = jax.tree_util.tree_unflatten(
    tree, [v + 0.05 * jax.random.normal(k, v.shape) for v, k in zip(leaves, keys)]
  )
  save_diffusers_vae(model, variables, str(tmp_path / "vae"))
  theirs = diffusers.AutoencoderKL.from_pretrained(str(tmp_path / "vae")).eval()
  assert theirs.config.use_quant_conv == layout.get("use_quant_conv", True)
  _assert_close(_jax_outputs(model, variables, x, z), _torch_outputs(theirs, x, z))


def test_old_attention_tensor_names_load_as_the_new_ones(tmp_path):
  layout = LAYOUTS["sd"]
  theirs = _torch_vae(layout, seed=1)
  theirs.save_pretrained(tmp_path / "vae")
  weights = tmp_path / "vae" / "diffusion_pytorch_model.safetensors"
  tensors = safetensors.numpy.load_file(str(weights))
  old = {"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}
  renamed = {}
  for key, value in tensors.items():
    for new, name in old.items():
      if ".attentions.0." in key and f".{new}." in key:
        key = key.replace(f".{new}.", f".{name}.")
        value = value[:, :, None, None] if value.ndim == 2 else value  # the old 1x1-conv shapes
    renamed[key] = value
  assert any(".proj_attn." in k for k in renamed)
  safetensors.numpy.save_file(renamed, str(weights))
  model, variables = load_diffusers_vae(str(tmp_path))  # a pipeline folder: its vae/ is read
  x, z = _inputs(layout)
  _assert_close(_jax_outputs(model, variables, x, z), _torch_outputs(theirs, x, z))


@pytest.mark.parametrize(
  "field,value",
  [
    ("act_fn", "gelu"),
    ("down_block_types", ["DownEncoderBlock2D", "DownBlock2D"]),
    ("norm_num_groups", 12),
    ("_class_name", "AutoencoderTiny"),
    ("temporal_compression_ratio", 4),
  ],
)
def test_layout_it_cannot_represent_is_refused_naming_the_field(field, value, tmp_path):
  layout = LAYOUTS["sd"]
  model = AutoencoderKL(**layout, sample_size=SIZE)
  variables = model.init({"params": jax.random.key(0), "latent": jax.random.key(0)}, _inputs(layout)[0])
  save_diffusers_vae(model, variables, str(tmp_path))
  config = json.loads((tmp_path / "config.json").read_text())
  config[field] = value
  (tmp_path / "config.json").write_text(json.dumps(config))
  with pytest.raises(CheckpointError, match=field):
    load_diffusers_vae(str(tmp_path))


def test_weights_that_disagree_with_the_config_are_refused_naming_the_tensor(tmp_path):
  layout = LAYOUTS["sd3_flux"]
  model = AutoencoderKL(**layout, sample_size=SIZE)
  variables = model.init({"params": jax.random.key(0), "latent": jax.random.key(0)}, _inputs(layout)[0])
  save_diffusers_vae(model, variables, str(tmp_path))
  config = json.loads((tmp_path / "config.json").read_text())
  config["use_quant_conv"] = True
  (tmp_path / "config.json").write_text(json.dumps(config))
  with pytest.raises(CheckpointError, match=r"tensor quant_conv\.(weight|bias) is missing"):
    load_diffusers_vae(str(tmp_path))
  assert os.path.exists(tmp_path / "config.json")


def test_chunked_encode_and_decode_equal_the_whole_batch():
  layout = LAYOUTS["sd"]
  model = AutoencoderKL(**layout, sample_size=SIZE)
  x, z = _inputs(layout, batch=5)
  variables = model.init({"params": jax.random.key(1), "latent": jax.random.key(2)}, x)
  whole = model.apply(variables, z, method=model.decode)
  chunked = jax.jit(lambda v, z: decode_latents(model, v, z, batch_size=2))(variables, z)
  np.testing.assert_allclose(chunked, whole, atol=1e-5)
  mean, logvar = model.apply(variables, x, method=model.encode)
  cm, cl = encode_images(model, variables, x, batch_size=3)
  np.testing.assert_allclose(cm, mean, atol=1e-5)
  np.testing.assert_allclose(cl, logvar, atol=1e-5)


def test_bf16_compute_keeps_float32_parameters_and_tracks_float32_outputs():
  layout = LAYOUTS["sd"]
  x, z = _inputs(layout)
  f32 = AutoencoderKL(**layout, sample_size=SIZE)
  variables = f32.init({"params": jax.random.key(1), "latent": jax.random.key(2)}, x)
  bf16 = f32.clone(dtype=jnp.bfloat16)
  assert {a.dtype for a in jax.tree_util.tree_leaves(bf16.init(jax.random.key(0), x, False))} == {
    jnp.dtype(jnp.float32)
  }
  ref = f32.apply(variables, z, method=f32.decode)
  out = bf16.apply(variables, z, method=bf16.decode)
  assert out.dtype == jnp.float32
  assert float(jnp.abs(out - ref).max()) < 0.05 * float(jnp.abs(ref).max()) + 0.05


def test_latent_normalisation_is_shift_then_scale_and_inverts():
  z = jnp.linspace(-2.0, 2.0, 32).reshape(1, 2, 1, 16)
  model = AutoencoderKL(**LAYOUTS["sd3_flux"])
  np.testing.assert_allclose(normalize_latents(model, z), (z - 0.0609) * 1.5305, rtol=1e-6)
  np.testing.assert_allclose(denormalize_latents(model, normalize_latents(model, z)), z, atol=1e-6)
  stats = AutoencoderKL(
    latent_channels=16, latents_mean=tuple(range(16)), latents_std=(2.0,) * 16, scaling_factor=0.5
  )
  np.testing.assert_allclose(normalize_latents(stats, z), (z - jnp.arange(16.0)) * 0.5 / 2.0, rtol=1e-6)
  np.testing.assert_allclose(denormalize_latents(stats, normalize_latents(stats, z)), z, atol=1e-5)


def _tiny_vae_config(**train):
  config = load_config_file("configs/digits_vae.py")
  a = config.autoencoder
  a.block_out_channels, a.norm_num_groups = (8, 16), 4
  config.train.update(batch_size=16, num_steps=4, checkpoint_every=2, log_every=2, **train)
  return config


@pytest.mark.slow
def test_autoencoder_training_resumes_to_the_same_weights_and_loads_from_its_workdir(tmp_path):
  from jaxdiff.training.autoencoder_step import load_autoencoder, train_autoencoder

  config = _tiny_vae_config()
  straight = str(tmp_path / "straight")
  record = train_autoencoder(config, straight)
  assert record["step"] == 4 and record["scaling_factor"] > 0
  resumed = str(tmp_path / "resumed")
  assert train_autoencoder(config, resumed, stop_at_step=2)["step"] == 2
  assert train_autoencoder(config, resumed)["step"] == 4
  model, variables = load_autoencoder(straight)
  model2, variables2 = load_autoencoder(resumed)
  assert model.scaling_factor == pytest.approx(record["scaling_factor"]) and model.block_out_channels == (
    8,
    16,
  )
  for a, b in zip(jax.tree_util.tree_leaves(variables), jax.tree_util.tree_leaves(variables2)):
    np.testing.assert_array_equal(a, b)
  with pytest.raises(ConfigError, match="neither a diffusers AutoencoderKL folder"):
    load_autoencoder(str(tmp_path / "nothing"))
