"""Latent diffusion on the embedded digits: the digits demo's EDM recipe (configs/digits_edm.py) trained
in the 4x4x4 latent space of the autoencoder of configs/digits_vae.py, on the set encoded from it.

    python train.py --config=configs/digits_vae.py --workdir=runs/digits_vae
    python -m jaxdiff.latents encode --vae=runs/digits_vae --config=configs/digits_vae.py --out=runs/digits_vae/latents
    python train.py --config=configs/digits_latent.py --workdir=runs/digits_latent
    python sample.py --workdir=runs/digits_latent --num_samples=1000   # decoded digits (--keep_latents: latents too)
    python -m jaxdiff.evaluation --samples=runs/digits_latent/generated --dataset=digits

--config.latent.vae=WORKDIR names another autoencoder (and --config.data.data_dir its encoded set);
--config.data.name=digits encodes the digits on the fly instead of reading the encoded set. The workdir
records the autoencoder's digest (latent_vae.json): resuming or sampling with another one is refused.
The latents are normalised to unit variance by the autoencoder's measured scaling factor, so EDM's
sigma_data is 1 here (0.5 for pixels in [-1, 1]).
"""

import ml_collections

from jaxdiff.configs import digits


def get_config() -> ml_collections.ConfigDict:
  config = digits.get_config()
  config.latent.vae = "runs/digits_vae"
  d = config.data
  d.name = "latents"
  d.data_dir = "runs/digits_vae/latents"
  d.image_size = 4  # the latent: 4x4x4
  d.channels = 4
  m = config.model
  m.in_channels = 4
  m.channel_mult = (1, 2)  # 4x4, 2x2
  m.attention_resolutions = (2,)
  f = config.diffusion
  f.process = "edm"
  f.prediction = "edm"
  f.weighting = "edm"
  f.sigma_data = 1.0
  s = config.sample
  s.sampler = "dpmpp_2m"
  s.num_steps = 20
  s.clip_x0 = 0.0  # latents are not confined to [-1, 1]: no clipping of the predicted x0
  return config
