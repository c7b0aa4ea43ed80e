"""diffusers checkpoints in and out: ``UNet2DModel`` (and ``DiTTransformer2DModel``) folders <-> jaxdiff
models, diffusers scheduler configs <-> jaxdiff config fields, whole pipelines <-> training workdirs.

    model, variables = load_diffusers_unet("ddpm-cifar10-32/unet")   # no torch needed
    save_diffusers_unet(model, variables, "out/unet")                 # UNet2DModel.from_pretrained reads it
    python -m jaxdiff.interop import DIFFUSERS_DIR WORKDIR             # then sample.py / train.py on it
    python -m jaxdiff.interop export WORKDIR OUT_DIR                   # a DDPMPipeline / DDIMPipeline folder
    python -m jaxdiff.interop import VAE_DIR WORKDIR                   # AutoencoderKL -> an autoencoder workdir
"""

from jaxdiff.interop.dit import dit_model_config, load_diffusers_dit, save_diffusers_dit
from jaxdiff.interop.scheduler import config_to_scheduler, scheduler_overrides
from jaxdiff.interop.unet import DDPM_CONFIGS, load_diffusers_unet, save_diffusers_unet, unet_model_config
from jaxdiff.interop.vae import load_diffusers_vae, save_diffusers_vae
from jaxdiff.interop.vae_workdir import export_vae_workdir, import_vae
from jaxdiff.interop.workdir import export_workdir, import_diffusers

__all__ = [
  "DDPM_CONFIGS",
  "load_diffusers_unet",
  "save_diffusers_unet",
  "unet_model_config",
  "load_diffusers_dit",
  "save_diffusers_dit",
  "load_diffusers_vae",
  "save_diffusers_vae",
  "dit_model_config",
  "scheduler_overrides",
  "config_to_scheduler",
  "import_diffusers",
  "export_workdir",
  "import_vae",
  "export_vae_workdir",
]
