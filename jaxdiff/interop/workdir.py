"""A diffusers pipeline folder -> a jaxdiff training workdir, and back.

``import_diffusers(src, workdir)`` writes ``workdir/config.json`` (the package defaults with the
network, chain and sampler of the diffusers folder) and an Orbax checkpoint at step 0 through
``Checkpointer`` (EMA = the weights, fresh optimizer state), so ``sample.py --workdir`` samples
the diffusers model and ``train.py`` fine-tunes it, resuming from step 0. ``workdir/config.py``
returns that config.json, for train.py's ``--config`` flag (which takes Python files).
``export_workdir(workdir, out)`` writes a ``DDPMPipeline`` / ``DDIMPipeline`` folder
(``model_index.json``, ``unet/``, ``scheduler/``) from a workdir's newest checkpoint.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from jaxdiff import fileio
from jaxdiff.bulk.restore import restore_model
from jaxdiff.config_utils import validate_config
from jaxdiff.configs import default
from jaxdiff.errors import ConfigError, WorkdirError
from jaxdiff.interop.dit import dit_model_config, dit_params_from_diffusers, save_diffusers_dit
from jaxdiff.interop.files import CONFIG_NAME, DIFFUSERS_VERSION, read_json, read_model_folder, write_json
from jaxdiff.interop.scheduler import config_to_scheduler, scheduler_overrides
from jaxdiff.interop.unet import save_diffusers_unet, unet_model_config, unet_params_from_diffusers
from jaxdiff.models import DiT, UNet, create_model
from jaxdiff.training.checkpointer import Checkpointer
from jaxdiff.training.run_records import save_config
from jaxdiff.training.state import TrainState, create_optimizer

__all__ = ["import_diffusers", "export_workdir", "WORKDIR_CONFIG_PY"]

log = logging.getLogger(__name__)

SCHEDULER_NAME = "scheduler_config.json"
WORKDIR_CONFIG_PY = '''"""The config of this workdir: its config.json (written by `python -m jaxdiff.interop import`,
then by every train.py run). For train.py's --config flag, which takes Python files:

    python train.py --config=WORKDIR/config.py --workdir=WORKDIR
"""

import json
import os

from jaxdiff.config_utils import from_json


def get_config():
  path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "config.json")
  with open(path) as f:
    return from_json(json.load(f), source=path)
'''


def _find_parts(src: str) -> tuple[str, str | None]:
  """(model folder, scheduler_config.json or None) of a pipeline folder or a bare model folder."""
  for sub in ("unet", "transformer"):
    if fileio.exists(fileio.join(src, sub, CONFIG_NAME)):
      sched = fileio.join(src, "scheduler", SCHEDULER_NAME)
      return fileio.join(src, sub), sched if fileio.exists(sched) else None
  if fileio.exists(fileio.join(src, CONFIG_NAME)):
    return src, None
  raise ConfigError(
    f"{src} is neither a diffusers pipeline folder (unet/ or transformer/, scheduler/) nor a model folder "
    "(config.json + diffusion_pytorch_model.safetensors)"
  )


def import_diffusers(
  src: str,
  workdir: str,
  *,
  data: str | None = None,
  image_size: int | None = None,
  seed: int = 0,
) -> ml_collections.ConfigDict:
  """Create the jaxdiff workdir `workdir` from the diffusers folder `src` (a pipeline with ``unet/``
  and ``scheduler/``, or a bare ``UNet2DModel`` folder); returns its config. ``data`` names the
  training data set for fine-tuning (``config.data.name``; default: the package default), and
  ``image_size`` is needed when the model's config has no ``sample_size``. Without a scheduler the
  chain is the package default (DDPM's linear betas). A ``DiTTransformer2DModel`` folder (or a
  pipeline's ``transformer/``) becomes a DiT workdir in its latent space (jaxdiff has no VAE).
  Refuses a workdir that already holds a run."""
  if fileio.exists(fileio.join(workdir, "config.json")) or fileio.exists(fileio.join(workdir, "checkpoints")):
    raise WorkdirError(f"{workdir} already holds a run (config.json / checkpoints); give a new WORKDIR.")
  model_dir, sched_path = _find_parts(src)
  model_cfg, tensors = read_model_folder(model_dir)
  is_dit = model_cfg.get("_class_name") in ("DiTTransformer2DModel", "Transformer2DModel")
  fields = dit_model_config(model_cfg) if is_dit else unet_model_config(model_cfg)
  from_diffusers = dit_params_from_diffusers if is_dit else unet_params_from_diffusers
  size = image_size or model_cfg.get("sample_size")
  if isinstance(size, (list, tuple)):
    if len(set(size)) != 1:
      raise ConfigError(f"sample_size={size}: jaxdiff's image data are square")
    size = size[0]
  if not size:
    raise ConfigError(f"{model_dir}/config.json has no sample_size: give the image size (--image_size)")

  config = default.get_config()
  config.model.update(fields)
  config.data.image_size = int(size)
  config.data.channels = int(fields["in_channels"])
  config.data.num_classes = int(fields["num_classes"])
  config.seed = int(seed)
  if data:
    config.data.name = data
  if sched_path is not None:
    for section, values in scheduler_overrides(read_json(sched_path)).items():
      config[section].update(values)
  else:
    log.warning("%s has no scheduler/%s: the chain is jaxdiff's default (linear betas)", src, SCHEDULER_NAME)
  validate_config(config)

  model = create_model(config)
  params = jax.tree_util.tree_map(jnp.asarray, from_diffusers(model, tensors))
  tx, _ = create_optimizer(config)
  state = TrainState.create(
    apply_fn=model.apply, params=params, tx=tx, ema_params=jax.tree_util.tree_map(jnp.copy, params)
  )
  fileio.makedirs(workdir)
  save_config(config, workdir)
  fileio.atomic_write_text(fileio.join(workdir, "config.py"), WORKDIR_CONFIG_PY)
  ckpt = Checkpointer(workdir, keep=int(config.train.keep_checkpoints), async_save=False, config=config)
  try:
    ckpt.save(state)
  finally:
    ckpt.close()
  return config


def export_workdir(workdir: str, out: str, *, params: str = "ema", step: int | None = None) -> str:
  """Write the model of a jaxdiff workdir (newest checkpoint, or `step`; EMA or raw `params`) as a
  diffusers pipeline folder `out`: ``unet/`` (UNet2DModel), ``scheduler/`` (DDPMScheduler for the
  ddpm sampler, else DDIMScheduler) and ``model_index.json`` (``DDPMPipeline`` / ``DDIMPipeline``).
  A DiT workdir gives ``transformer/`` (DiTTransformer2DModel) and ``scheduler/`` only (a
  DiTPipeline also needs its VAE)."""
  config, model, _, weights, _ = restore_model(workdir, params=params, step=step)
  if not isinstance(model, (UNet, DiT)):
    raise ConfigError(f"config.model.name={config.model.name!r}: only UNets and DiTs export to diffusers")
  scheduler = config_to_scheduler(config)
  size = int(config.data.image_size)
  if isinstance(model, DiT):  # a latent-space transformer: no pipeline without a VAE
    save_diffusers_dit(model, {"params": weights}, fileio.join(out, "transformer"), sample_size=size)
  else:
    save_diffusers_unet(model, {"params": weights}, fileio.join(out, "unet"), sample_size=size)
  fileio.makedirs(fileio.join(out, "scheduler"))
  write_json(fileio.join(out, "scheduler", SCHEDULER_NAME), scheduler)
  if isinstance(model, DiT):
    return os.fspath(out)
  pipeline = "DDPMPipeline" if scheduler["_class_name"] == "DDPMScheduler" else "DDIMPipeline"
  index: dict[str, Any] = {
    "_class_name": pipeline,
    "_diffusers_version": DIFFUSERS_VERSION,
    "scheduler": ["diffusers", scheduler["_class_name"]],
    "unet": ["diffusers", "UNet2DModel"],
  }
  write_json(fileio.join(out, "model_index.json"), index)
  return os.fspath(out)
