"""MeanFlow's DiT-B/2 recipe on ImageNet 256x256 (Geng et al. 2025), in SD-VAE latent space.

A DiT-B/2 with a second time (model.second_time: t and t - r embedded) on 32x32x4 latents of the
SD VAE (an encoded set, config.data.name = "latents": encode once with `python -m jaxdiff.latents
encode`, then point --config.data.data_dir at it), class-conditional, trained with the MeanFlow
loss: (r, t) logit-normal(-0.4, 1), r < t on a quarter of the batch, adaptive weight p = 1,
guidance folded into training (omega, kappa) so that a guided sample is one evaluation. Adam at
1e-4, batch 256, no warm-up, EMA 0.9999, as the paper trains it (its B/2: FID 6.17 at one step).
Both times enter through Fourier features of order-one frequency (configs/digits_meanflow.py says
why: with sinusoids of 1000 t the network's du/dt swamps the target); not yet run at this scale.

    python train.py --config=configs/imagenet256_meanflow.py --workdir=runs/in256_meanflow \\
      --config.data.data_dir=DIR
    python sample.py --workdir=runs/in256_meanflow --num_samples=50000 --num_steps=1
"""

import ml_collections

from jaxdiff.configs import default


def get_config() -> ml_collections.ConfigDict:
  config = default.get_config()

  d = config.data
  d.name = "latents"  # an encoded set: SD-VAE latents of ImageNet 256x256
  d.image_size = 32
  d.channels = 4
  d.num_classes = 1000
  d.random_flip = False  # flips are applied before encoding

  m = config.model
  m.name = "dit"
  m.dit_variant = "B/2"
  m.in_channels = 4
  m.num_classes = 1000
  m.second_time = True
  m.time_embedding = "fourier"  # smooth in t, as in configs/digits_meanflow.py: du/dt is in the target
  m.fourier_scale = 1.0
  m.dtype = "bfloat16"

  f = config.diffusion
  f.process = "flow"
  f.prediction = "mean_velocity"
  fs = config.few_step
  fs.method = "meanflow"
  fs.ratio = 0.25
  fs.logit_mean = -0.4
  fs.logit_std = 1.0
  fs.adaptive_p = 1.0
  fs.omega = 1.0  # guidance folded into training: omega v + kappa u(c) + (1 - omega - kappa) u(null)
  fs.kappa = 0.5

  t = config.train
  t.batch_size = 256
  t.num_steps = 1_200_000  # 240 epochs of 1.28 M images at batch 256
  t.label_dropout = 0.1
  t.checkpoint_every = 10_000
  t.sample_every = 10_000

  o = config.optim
  o.learning_rate = 1e-4
  o.warmup_steps = 0
  config.ema.decay = 0.9999

  s = config.sample
  s.sampler = "meanflow"
  s.num_steps = 1
  s.grid = "uniform"
  s.clip_x0 = 0.0  # latents are not bounded to [-1, 1]
  return config
