"""A diffusers pipeline folder -> a jaxdiff training workdir, and back.

``import_diffusers(src, workdir)`` writes ``workdir/config.json`` (the package defaults with the
network, chain and sampler of the diffusers folder) and an Orbax checkpoint at step 0 through
``Checkpointer`` (EMA = the weights, fresh optimizer state), so ``sample.py --workdir`` samples
the diffusers model and ``train.py`` fine-tunes it, resuming from step 0. ``workdir/config.py``
returns that config.json, for train.py's ``--config`` flag (which takes Python files).
``export_workdir(workdir, out)`` writes a ``DDPMPipeline`` / ``DDIMPipeline`` folder
(``model_index.json``, ``unet/``, ``scheduler/``) from a workdir's newest checkpoint.

Both are checked whole before anything is written (every config field's type, every tensor
finite, the target a new or empty folder unless ``overwrite``) and write whole or not at all
(``jaxdiff.interop.staging``): a kill at any moment leaves the target absent or complete.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from jaxdiff import fileio
from jaxdiff.config_utils import validate_config
from jaxdiff.configs import default
from jaxdiff.errors import ConfigError
from jaxdiff.interop.dit import dit_model_config, dit_params_from_diffusers, save_diffusers_dit
from jaxdiff.interop.files import (
  CONFIG_NAME,
  DIFFUSERS_VERSION,
  WEIGHTS_NAME,
  check_finite,
  flatten_params,
  read_json,
  read_model_folder,
  write_json,
)
from jaxdiff.interop.scheduler import (
  EDM_SCHEDULERS,
  config_to_scheduler,
  edm_output_sign,
  scheduler_overrides,
)
from jaxdiff.interop.staging import check_target, staged
from jaxdiff.interop.unet import save_diffusers_unet, unet_model_config, unet_params_from_diffusers
from jaxdiff.models import DiT, UNet, create_model
from jaxdiff.training.checkpointer import Checkpointer
from jaxdiff.training.restore import restore_model
from jaxdiff.training.run_records import load_config, save_config
from jaxdiff.training.state import TrainState, create_optimizer

__all__ = [
  "import_diffusers",
  "export_workdir",
  "write_workdir",
  "find_parts",
  "WORKDIR_CONFIG_PY",
  "NO_DATA",
]

log = logging.getLogger(__name__)

SCHEDULER_NAME = "scheduler_config.json"
INDEX_NAME = "model_index.json"
MODEL_FOLDERS = ("unet", "transformer")
NO_DATA = "none"  # config.data.name of a workdir imported without --data (fine-tuning asks for a data set)
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


def _incomplete(src: str, what: str) -> ConfigError:
  return ConfigError(
    f"{src} is an incomplete diffusers pipeline folder: {what}. It was probably cut short while being "
    "written or copied; save or copy it again."
  )


def find_parts(src: str) -> tuple[str, str | None]:
  """(model folder, scheduler_config.json or None) of a pipeline folder or a bare model folder.
  ConfigError for a path that is no folder, a pipeline folder missing a part (its model's config or
  weights, its scheduler, a component model_index.json lists) or holding two models."""
  if fileio.isfile(src):
    raise ConfigError(
      f"{src} is a file: give the diffusers folder (a pipeline or model saved by save_pretrained)."
    )
  if not fileio.isdir(src):
    raise ConfigError(f"{src}: no such folder; give a diffusers pipeline or model folder.")
  index_path = fileio.join(src, INDEX_NAME)
  index = read_json(index_path) if fileio.exists(index_path) else None
  found = [sub for sub in MODEL_FOLDERS if fileio.isdir(fileio.join(src, sub))]
  if len(found) > 1:
    raise ConfigError(
      f"{src} holds two models ({' and '.join(f + '/' for f in found)}): a pipeline has one. Remove the "
      "stale one (or export into an empty folder) and import again."
    )
  if index is not None:
    listed = [k for k, v in index.items() if not k.startswith("_") and isinstance(v, list) and v and v[0]]
    for part in listed:
      if part in MODEL_FOLDERS + ("scheduler",) and not fileio.isdir(fileio.join(src, part)):
        raise _incomplete(src, f"{INDEX_NAME} lists {part}/ but there is no such folder")
    for sub in found:
      if sub not in listed:
        raise ConfigError(f"{src}: {INDEX_NAME} does not list the {sub}/ folder it holds; a stale folder?")
  if found:
    model_dir = fileio.join(src, found[0])
    for name in (WEIGHTS_NAME, CONFIG_NAME):
      if not fileio.exists(fileio.join(model_dir, name)):
        raise _incomplete(src, f"{found[0]}/{name} is missing")
    sched = fileio.join(src, "scheduler", SCHEDULER_NAME)
    if not fileio.exists(sched):
      raise _incomplete(src, f"scheduler/{SCHEDULER_NAME} is missing (without it the chain is unknown)")
    return model_dir, sched
  if index is not None:
    raise _incomplete(src, f"{INDEX_NAME} is there but no {' or '.join(f + '/' for f in MODEL_FOLDERS)}")
  if fileio.exists(fileio.join(src, CONFIG_NAME)):
    return src, None
  raise ConfigError(
    f"{src} is neither a diffusers pipeline folder (unet/ or transformer/, scheduler/) nor a model folder "
    "(config.json + diffusion_pytorch_model.safetensors)"
  )


def _image_size(model_cfg: dict, model_dir: str, image_size: int | None) -> int:
  if image_size is not None:
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size <= 0:
      raise ConfigError(f"image_size={image_size!r} must be a positive integer.")
    return int(image_size)
  size = model_cfg.get("sample_size")
  if isinstance(size, (list, tuple)):
    if len(set(size)) != 1:
      raise ConfigError(f"{model_dir}/config.json: sample_size={size}: jaxdiff's image data are square")
    size = size[0]
  if not size:
    raise ConfigError(f"{model_dir}/config.json has no sample_size: give the image size (--image_size)")
  return int(size)


def _import_config(src: str, data: str | None, image_size: int | None, seed: int, checkpoint_dir: str):
  """(config, model, params as numpy) of the diffusers folder `src`, everything checked."""
  model_dir, sched_path = find_parts(src)
  model_cfg, tensors = read_model_folder(model_dir)  # tensors checked finite
  if model_cfg.get("_class_name") == "AutoencoderKL":
    raise ConfigError(
      f"{model_dir} is an AutoencoderKL folder: import it with jaxdiff.interop.import_vae (python -m "
      "jaxdiff.interop import does so)."
    )
  where = fileio.join(model_dir, CONFIG_NAME)
  is_dit = model_cfg.get("_class_name") in ("DiTTransformer2DModel", "Transformer2DModel")
  fields = dit_model_config(model_cfg, where) if is_dit else unet_model_config(model_cfg, where)
  from_diffusers = dit_params_from_diffusers if is_dit else unet_params_from_diffusers
  size = _image_size(model_cfg, model_dir, image_size)

  config = default.get_config()
  config.model.update(fields)
  config.data.image_size = size
  config.data.channels = int(fields["in_channels"])
  config.data.num_classes = int(fields["num_classes"])
  config.data.name = data or NO_DATA
  config.seed = int(seed)
  config.train.checkpoint_dir = checkpoint_dir or ""
  if sched_path is not None:
    sched = read_json(sched_path)
    for section, values in scheduler_overrides(sched, sched_path).items():
      config[section].update(values)
    if sched.get("_class_name") in EDM_SCHEDULERS and is_dit:
      raise ConfigError(
        f"{sched_path}: {sched['_class_name']} is converted for UNet2DModel pipelines only, not for a "
        "DiTTransformer2DModel"
      )
    tensors = _signed_output(tensors, edm_output_sign(sched))
  else:
    log.warning("%s has no scheduler/%s: the chain is jaxdiff's default (linear betas)", src, SCHEDULER_NAME)
  if config.model.learn_sigma and not is_dit:  # learned_range: the output's second half is the variance
    out = int(fields["out_channels"])
    if out != 2 * config.data.channels:
      raise ConfigError(
        f"{sched_path}: variance_type='learned_range' needs a model with 2 x {config.data.channels} output "
        f"channels; {where} has out_channels={out}."
      )
    config.model.out_channels = config.data.channels
  validate_config(config)
  model = create_model(config)
  return config, model, from_diffusers(model, tensors)


def _signed_output(tensors: dict, sign: float) -> dict:
  """The UNet2DModel's tensors with its last convolution negated when `sign` is -1 (an EDM
  v_prediction network becomes jaxdiff's F: negation is exact in floating point)."""
  if sign > 0:
    return tensors
  return {k: -v if k in ("conv_out.weight", "conv_out.bias") else v for k, v in tensors.items()}


def import_diffusers(
  src: str,
  workdir: str,
  *,
  data: str | None = None,
  image_size: int | None = None,
  seed: int = 0,
  checkpoint_dir: str | None = None,
  overwrite: bool = False,
) -> ml_collections.ConfigDict:
  """Create the jaxdiff workdir `workdir` from the diffusers folder `src` (a pipeline with ``unet/``
  and ``scheduler/``, or a bare ``UNet2DModel`` folder); returns its config. ``data`` names the
  training data set for fine-tuning (``config.data.name``; default ``"none"``: fine-tuning then asks
  for one), and ``image_size`` is needed when the model's config has no ``sample_size``. Without a
  scheduler the chain is the package default (DDPM's linear betas). A ``DiTTransformer2DModel``
  folder (or a pipeline's ``transformer/``) becomes a DiT workdir in its latent space.
  ``checkpoint_dir``: where the checkpoint goes (``config.train.checkpoint_dir``, for a workdir on
  a store Orbax cannot write). Refuses a non-empty workdir unless ``overwrite``; writes whole or
  not at all."""
  check_target(workdir, overwrite=overwrite, what="WORKDIR")
  if checkpoint_dir:
    check_target(checkpoint_dir, overwrite=overwrite, what="checkpoint_dir")
  config, model, params = _import_config(src, data, image_size, seed, checkpoint_dir or "")
  write_workdir(workdir, config, model.apply, params, checkpoint_dir=checkpoint_dir, overwrite=overwrite)
  return config


def write_workdir(
  workdir: str,
  config: ml_collections.ConfigDict,
  apply_fn: Any,
  params: Any,
  *,
  checkpoint_dir: str | None = None,
  overwrite: bool = False,
  extra_files: dict[str, str] | None = None,
) -> None:
  """Write a workdir train.py resumes and sample.py reads: `config`'s config.json and config.py, and
  an Orbax checkpoint at step 0 holding `params` (EMA = the weights, a fresh optimizer state), plus
  `extra_files` ({name: text}); whole or not at all, config.json last."""
  params = jax.tree_util.tree_map(jnp.asarray, params)
  tx, _ = create_optimizer(config)
  state = TrainState.create(
    apply_fn=apply_fn, params=params, tx=tx, ema_params=jax.tree_util.tree_map(jnp.copy, params)
  )
  with staged(workdir, overwrite=overwrite, what="WORKDIR") as tmp:
    if checkpoint_dir:
      with staged(checkpoint_dir, overwrite=overwrite, what="checkpoint_dir") as ckpt_tmp:
        _save_step0(tmp, config, state, ckpt_tmp)
    else:
      _save_step0(tmp, config, state, None)
    fileio.atomic_write_text(fileio.join(tmp, "config.py"), WORKDIR_CONFIG_PY)
    for name, text in (extra_files or {}).items():
      fileio.atomic_write_text(fileio.join(tmp, name), text)
    save_config(config, tmp)  # last: a workdir with config.json is a complete one


def _save_step0(workdir: str, config, state, directory: str | None) -> None:
  ckpt = Checkpointer(
    workdir, keep=int(config.train.keep_checkpoints), async_save=False, config=config, directory=directory
  )
  try:
    ckpt.save(state)
  finally:
    ckpt.close()


def export_workdir(
  workdir: str, out: str, *, params: str = "ema", step: int | None = None, overwrite: bool = False
) -> str:
  """Write the model of a jaxdiff workdir (newest checkpoint, or `step`; EMA or raw `params`) as a
  diffusers pipeline folder `out`: ``unet/`` (UNet2DModel), ``scheduler/`` (see
  ``jaxdiff.interop.scheduler``: DDPM, DDIM, DPM-Solver multistep or flow-matching Euler) and
  ``model_index.json`` (``DDIMPipeline`` for DDIM, else ``DDPMPipeline``, whose loop those
  schedulers run). A DiT workdir gives ``transformer/`` (DiTTransformer2DModel) and ``scheduler/``
  only (a DiTPipeline also needs its VAE); an EDM workdir ``unet/`` and ``scheduler/`` (EDMEulerScheduler
  or EDMDPMSolverMultistepScheduler) only: no diffusers pipeline runs a UNet2DModel with EDM's input
  scaling, so the loop is the user's (``scale_model_input``, the UNet, ``step``). Refuses a non-empty `out` unless ``overwrite``; checks
  everything before writing, and writes whole or not at all."""
  check_target(out, overwrite=overwrite, what="OUT_DIR")
  if fileio.exists(fileio.join(workdir, CONFIG_NAME)) and load_config(workdir).model.name == "autoencoder_kl":
    raise ConfigError(
      f"{workdir} holds an autoencoder: export it with jaxdiff.interop.export_vae_workdir (python -m "
      "jaxdiff.interop export does so)."
    )
  config, model, _, weights, _ = restore_model(workdir, params=params, step=step)
  if not isinstance(model, (UNet, DiT)):
    raise ConfigError(f"config.model.name={config.model.name!r}: only UNets and DiTs export to diffusers")
  scheduler = config_to_scheduler(config)
  check_finite({"/".join(k): v for k, v in flatten_params(weights).items()}, f"{workdir} ({params} weights)")
  size = int(config.data.image_size)
  with staged(out, overwrite=overwrite, what="OUT_DIR") as tmp:
    if isinstance(model, DiT):  # a latent-space transformer: no pipeline without a VAE
      save_diffusers_dit(model, {"params": weights}, fileio.join(tmp, "transformer"), sample_size=size)
    else:
      save_diffusers_unet(model, {"params": weights}, fileio.join(tmp, "unet"), sample_size=size)
    fileio.makedirs(fileio.join(tmp, "scheduler"))
    write_json(fileio.join(tmp, "scheduler", SCHEDULER_NAME), scheduler)
    if not isinstance(model, DiT) and scheduler["_class_name"] not in EDM_SCHEDULERS:
      pipeline = "DDIMPipeline" if scheduler["_class_name"] == "DDIMScheduler" else "DDPMPipeline"
      index: dict[str, Any] = {
        "_class_name": pipeline,
        "_diffusers_version": DIFFUSERS_VERSION,
        "scheduler": ["diffusers", scheduler["_class_name"]],
        "unet": ["diffusers", "UNet2DModel"],
      }
      write_json(fileio.join(tmp, INDEX_NAME), index)  # last
  return os.fspath(out)
