"""An autoencoder for the embedded 8x8 digits: 8x8x1 images <-> 4x4x4 latents (the SD-VAE family,
two levels of 16 and 32 channels, no mid-block attention: at 4x4 it buys nothing and costs a third of
the step on a CPU), trained with an L1 reconstruction loss plus 1e-4 x KL for 1000 steps. At the end of training the scaling factor that gives the training latents unit variance is
measured and written to WORKDIR/autoencoder.json; configs/digits_latent.py trains a diffusion model in
these latents.

    python train.py --config=configs/digits_vae.py --workdir=runs/digits_vae
    python -m jaxdiff.latents encode --vae=runs/digits_vae --config=configs/digits_vae.py --out=runs/digits_vae/latents
"""

import ml_collections

from jaxdiff.configs import digits


def get_config() -> ml_collections.ConfigDict:
  config = digits.get_config()
  config.model.name = "autoencoder_kl"
  a = config.autoencoder
  a.block_out_channels = (16, 32)  # 8x8 -> 4x4
  a.mid_block_add_attention = False
  a.layers_per_block = 1
  a.latent_channels = 4
  a.norm_num_groups = 8
  a.recon_loss = "l1"
  a.kl_weight = 1e-4
  t = config.train
  t.batch_size = 128
  t.num_steps = 1000
  t.checkpoint_every = 500
  t.log_every = 250
  o = config.optim
  o.learning_rate = 1e-3
  o.warmup_steps = 100
  config.ema.decay = 0.999
  return config
