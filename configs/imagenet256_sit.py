"""Class-conditional ImageNet 256x256 with SiT-XL/2 (Ma et al. 2024): DiT-XL/2's network and latents
(configs/imagenet256_dit.py) trained as a linear-interpolant flow (x_t = (1 - t) x0 + t eps, velocity
prediction, t uniform), no learned variance; AdamW 1e-4, batch 256, EMA 0.9999, 400k steps (SiT's
FID-50K 17.2 without guidance there); sampled with Heun's second-order ODE solver in 125 steps (250
network evaluations, SiT's ODE setting) and guidance 1.5.

    python train.py --config=configs/imagenet256_sit.py --workdir=gs://BUCKET/runs/sit_xl2 \\
        --config.data.data_dir=gs://BUCKET/imagenet256_sdvae
"""

import ml_collections

from jaxdiff.config_utils import sibling_config


def get_config() -> ml_collections.ConfigDict:
  config = sibling_config(__file__, "imagenet256_dit")
  config.model.learn_sigma = False
  f = config.diffusion
  f.process = "flow"
  f.prediction = "flow"
  f.time_sampling = "uniform"
  s = config.sample
  s.sampler = "heun"
  s.num_steps = 125
  s.guidance_scale = 1.5
  return config
