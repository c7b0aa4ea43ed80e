"""Class-conditional ImageNet 256x256 with DiT-XL/2 in Stable Diffusion's latent space (Peebles & Xie 2023):
32x32x4 latents of `stabilityai/sd-vae-ft-ema` (scaling 0.18215), adaLN-Zero DiT-XL/2 (675M parameters,
256 tokens), the linear beta schedule over T = 1000 with eps prediction and a learned variance, AdamW
at a constant 1e-4, no weight decay, no warm-up, batch 256, EMA 0.9999, labels dropped 10% of the time,
horizontal flips (stored in the encoded set), 400k steps (the paper's ablation length; FID-50K 19.5
without guidance there); sampled with 250 DDPM steps (guidance 1.5: the paper's best, FID 2.27 at 7M steps).

Data: ImageNet's train tarball downloaded by hand into TFDS's manual folder, then prepared once
(`tfds build imagenet2012 --manual_dir=...`), encoded once with ADM's centre crop and flips:

    python -m jaxdiff.latents encode --vae=sd-vae-ft-ema --config=configs/imagenet256_dit.py \\
        --config.data.name=tfds/imagenet2012 --config.data.image_size=256 --config.data.channels=3 \\
        --flip --out=gs://BUCKET/imagenet256_sdvae
    python train.py --config=configs/imagenet256_dit.py --workdir=gs://BUCKET/runs/dit_xl2 \\
        --config.data.data_dir=gs://BUCKET/imagenet256_sdvae

(or `--config.data.name=tfds/imagenet2012 --config.data.data_dir=TFDS_DIR` to encode on the fly). FID-50K
against ADM's reference batch, 50 samples per class, decoded by sample.py:

    python sample.py --workdir=gs://BUCKET/runs/dit_xl2 --num_samples=50000 --labels=balanced --output=OUT
    python -m jaxdiff.evaluation --samples=OUT --reference=VIRTUAL_imagenet256_labeled.npz \\
        --inception_weights=inception_fid.npz
"""

import ml_collections

from jaxdiff.configs import default


def get_config() -> ml_collections.ConfigDict:
  config = default.get_config()
  config.latent.vae = "sd-vae-ft-ema"  # a local diffusers AutoencoderKL folder
  config.latent.decode_batch_size = 32
  d = config.data
  d.name = "latents"
  d.data_dir = ""  # the encoded set (python -m jaxdiff.latents encode --out=...)
  d.image_size = 32  # 256 / 8
  d.channels = 4
  d.num_classes = 1000
  m = config.model
  m.name = "dit"
  m.dit_variant = "XL/2"
  m.in_channels = 4
  m.num_classes = 1000  # label 1000 is the null class
  m.learn_sigma = True
  m.dtype = "bfloat16"
  t = config.train
  t.batch_size = 256
  t.num_steps = 400_000
  t.checkpoint_every = 10_000
  t.sample_every = 50_000
  t.num_sample_images = 16
  t.label_dropout = 0.1
  o = config.optim
  o.optimizer = "adamw"
  o.learning_rate = 1e-4
  o.weight_decay = 0.0
  o.warmup_steps = 0
  o.grad_clip = 0.0
  config.ema.decay = 0.9999
  s = config.sample
  s.sampler = "ddpm"
  s.num_steps = 250
  s.guidance_scale = 1.5
  s.batch_size = 125
  s.clip_x0 = 0.0  # latents are not confined to [-1, 1]
  return config
