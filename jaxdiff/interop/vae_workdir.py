"""A diffusers ``AutoencoderKL`` folder -> a jaxdiff autoencoder workdir, and back.

``import_vae(src, workdir)`` writes the layout train.py writes for ``config.model.name =
"autoencoder_kl"``: ``config.json`` (the package defaults with ``config.autoencoder`` and
``config.data`` of the folder), an Orbax checkpoint at step 0 (EMA = the weights) and
``autoencoder.json`` (the folder's scaling and shift factors), so ``config.latent.vae=WORKDIR``,
``python -m jaxdiff.latents encode --vae=WORKDIR`` and ``train.py --config=WORKDIR/config.py``
(fine-tuning from step 0) accept it. ``export_vae_workdir(workdir, out)`` writes an
``AutoencoderKL`` folder (``config.json`` + safetensors) diffusers' ``from_pretrained`` reads.
Both check everything first and write whole or not at all (``jaxdiff.interop.staging``).
"""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from jaxdiff import fileio
from jaxdiff.config_utils import validate_config
from jaxdiff.configs import default
from jaxdiff.errors import ConfigError
from jaxdiff.interop.files import CONFIG_NAME, check_finite, flatten_params
from jaxdiff.interop.staging import check_target, staged
from jaxdiff.interop.vae import load_diffusers_vae, save_diffusers_vae, vae_folder
from jaxdiff.interop.workdir import MODEL_FOLDERS, NO_DATA, write_workdir
from jaxdiff.training import autoencoder_step
from jaxdiff.training.checkpointer import Checkpointer
from jaxdiff.training.run_records import load_config
from jaxdiff.training.state import TrainState, create_optimizer

__all__ = ["is_vae_folder", "is_autoencoder_workdir", "import_vae", "export_vae_workdir"]

# AutoencoderKL fields a workdir must reproduce (sample_size is only the training image size there)
_FIELDS = (
  "in_channels", "out_channels", "block_out_channels", "layers_per_block", "latent_channels", "norm_num_groups",
  "mid_block_add_attention", "use_quant_conv", "use_post_quant_conv", "scaling_factor", "shift_factor",
  "latents_mean", "latents_std",
)  # fmt: skip


def is_vae_folder(path: str) -> bool:
  """Whether `path` is a diffusers folder whose config.json names AutoencoderKL, or a pipeline folder
  whose only model is its ``vae/`` (one with ``unet/`` or ``transformer/`` imports that model)."""
  config = fileio.join(vae_folder(path), CONFIG_NAME)
  if not fileio.isdir(path) or not fileio.exists(config):
    return False
  if any(fileio.isdir(fileio.join(path, sub)) for sub in MODEL_FOLDERS):
    return False
  try:
    return json.loads(fileio.read_text(config)).get("_class_name") == "AutoencoderKL"
  except (ValueError, AttributeError):
    return False


def is_autoencoder_workdir(workdir: str) -> bool:
  """Whether `workdir` holds a jaxdiff autoencoder run (config.model.name = "autoencoder_kl")."""
  if not fileio.exists(fileio.join(workdir, CONFIG_NAME)):
    return False
  return load_config(workdir).model.name == "autoencoder_kl"


def _vae_config(model, src: str, data: str | None, image_size: int | None, seed: int, checkpoint_dir: str):
  """The workdir config of the loaded autoencoder `model`; ConfigError naming the diffusers field an
  autoencoder workdir (config.autoencoder) cannot hold."""
  config = default.get_config()
  config.model.name = "autoencoder_kl"
  a = config.autoencoder
  a.block_out_channels = tuple(int(c) for c in model.block_out_channels)
  a.layers_per_block = int(model.layers_per_block)
  a.latent_channels = int(model.latent_channels)
  a.norm_num_groups = int(model.norm_num_groups)
  a.mid_block_add_attention = bool(model.mid_block_add_attention)
  a.scaling_factor = float(model.scaling_factor)
  a.shift_factor = float(model.shift_factor or 0.0)
  size = model.sample_size if image_size is None else image_size
  if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
    raise ConfigError(f"image_size={size!r} must be a positive integer.")
  config.data.image_size = int(size)
  config.data.channels = int(model.in_channels)
  config.data.num_classes = 0
  config.data.name = data or NO_DATA
  config.seed = int(seed)
  config.train.checkpoint_dir = checkpoint_dir
  scaling = {"scaling_factor": a.scaling_factor, "shift_factor": a.shift_factor}
  rebuilt = autoencoder_step.autoencoder_from_config(config, scaling)
  for field in _FIELDS:
    want, got = getattr(model, field), getattr(rebuilt, field)
    if field == "shift_factor":  # None and 0 shift alike
      want, got = want or 0.0, got or 0.0
    if got != want:
      raise ConfigError(
        f"{fileio.join(vae_folder(src), CONFIG_NAME)}: {field}={want!r} has no place in a jaxdiff "
        "autoencoder workdir (config.autoencoder); give the folder itself as config.latent.vae / --vae instead."
      )
  validate_config(config)
  return config, rebuilt


def import_vae(
  src: str,
  workdir: str,
  *,
  data: str | None = None,
  image_size: int | None = None,
  seed: int = 0,
  checkpoint_dir: str | None = None,
  overwrite: bool = False,
) -> ml_collections.ConfigDict:
  """Create the autoencoder workdir `workdir` from the diffusers AutoencoderKL folder `src` (or a
  pipeline's ``vae/``); returns its config. ``data`` names the images for fine-tuning
  (``config.data.name``, default ``"none"``), ``image_size`` their size (default the folder's
  sample_size). Refuses a non-empty workdir unless ``overwrite``; writes whole or not at all."""
  check_target(workdir, overwrite=overwrite, what="WORKDIR")
  if checkpoint_dir:
    check_target(checkpoint_dir, overwrite=overwrite, what="checkpoint_dir")
  loaded, variables = load_diffusers_vae(src)
  config, model = _vae_config(loaded, src, data, image_size, seed, checkpoint_dir or "")
  record = {
    "step": 0,
    "scaling_factor": float(model.scaling_factor),
    "shift_factor": float(model.shift_factor),
  }
  write_workdir(
    workdir, config, model.apply, variables["params"], checkpoint_dir=checkpoint_dir, overwrite=overwrite,
    extra_files={autoencoder_step.AUTOENCODER_RECORD: json.dumps(record, indent=2) + "\n"},
  )  # fmt: skip
  return config


def _restore(workdir: str, params: str, step: int | None) -> tuple[Any, dict]:
  """(model, {"params": ...}) of an autoencoder workdir: its EMA or raw weights at `step` (default newest)."""
  if params == "ema" and step is None:
    return autoencoder_step.load_autoencoder_workdir(workdir)
  model, _ = autoencoder_step.load_autoencoder_workdir(workdir)  # checks the run and its record
  config = load_config(workdir)
  x = jnp.zeros((1, model.sample_size, model.sample_size, model.in_channels), jnp.float32)
  init = model.init({"params": jax.random.key(0)}, x, False)["params"]
  tx, _ = create_optimizer(config)
  target = TrainState.create(apply_fn=model.apply, params=init, tx=tx, ema_params=init)
  ckpt = Checkpointer(workdir, async_save=False, config=config)
  try:
    state, restored = ckpt.restore(target, step=step)
  finally:
    ckpt.close()
  if restored is None:
    raise ConfigError(f"no checkpoint of the autoencoder in {workdir}")
  tree = state.ema_params if params == "ema" else state.params
  return model, {"params": jax.tree_util.tree_map(jnp.asarray, tree)}


def export_vae_workdir(
  workdir: str, out: str, *, params: str = "ema", step: int | None = None, overwrite: bool = False
) -> str:
  """Write the autoencoder of a jaxdiff workdir (newest checkpoint, or `step`; EMA or raw `params`)
  as a diffusers ``AutoencoderKL`` folder `out` (config.json with the workdir's scaling and shift
  factors, safetensors). Refuses a non-empty `out` unless ``overwrite``; writes whole or not at all."""
  if params not in ("ema", "raw"):
    raise ConfigError(f"params={params!r}: use 'ema' (the averaged weights) or 'raw'.")
  check_target(out, overwrite=overwrite, what="OUT_DIR")
  model, variables = _restore(workdir, params, step)
  check_finite(
    {"/".join(k): v for k, v in flatten_params(variables).items()}, f"{workdir} ({params} weights)"
  )
  with staged(out, overwrite=overwrite, what="OUT_DIR") as tmp:
    save_diffusers_vae(model, variables, tmp)
  return os.fspath(out)
