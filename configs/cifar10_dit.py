"""Class-conditional CIFAR-10 32x32x3 with DiT-S/2 (33M parameters), the DiT paper's recipe
(Peebles & Xie 2023, Sec. 4 "Training" and its train.py / sample.py) at CIFAR-10's size.

Taken from the paper: adaLN-Zero DiT-S/2 (hidden 384, 12 blocks, 6 heads, patch 2: 256 tokens
here, as for 256x256 ImageNet latents); AdamW with a constant learning rate 1e-4, no weight
decay, no warm-up, batch 256, EMA decay 0.9999; horizontal flips; the linear beta schedule
1e-4..0.02 over T = 1000 with eps prediction and a learned variance (learn_sigma: L_simple +
improved DDPM's L_vlb); class labels dropped 10% of the time for classifier-free guidance;
400k steps (the paper's ablation length); sampled with 250 DDPM steps and guidance 1.5 (the
paper's best FID setting); no gradient clipping. Not taken: the Stable Diffusion VAE (CIFAR-10
is trained in pixel space, 3 channels instead of 4 latent ones) and the paper's 7M-step run.
On accelerators add --config.model.dtype=bfloat16 (float32 parameters stay).
"""

import ml_collections

from jaxdiff.configs import default


def get_config() -> ml_collections.ConfigDict:
  config = default.get_config()

  d = config.data
  d.name = "tfds/cifar10"
  d.image_size = 32
  d.channels = 3
  d.random_flip = True

  m = config.model
  m.name = "dit"
  m.dit_variant = "S/2"  # hidden 384, depth 12, 6 heads, patch 2
  m.num_classes = 10  # label 10 is the null class
  m.learn_sigma = True

  t = config.train
  t.batch_size = 256
  t.num_steps = 400_000
  t.checkpoint_every = 10_000
  t.sample_every = 10_000

  o = config.optim
  o.optimizer = "adamw"
  o.learning_rate = 1e-4
  o.warmup_steps = 0
  o.grad_clip = 0.0

  s = config.sample
  s.sampler = "ddpm"
  s.num_steps = 250
  s.guidance_scale = 1.5
  return config
