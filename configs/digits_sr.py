"""4x4 -> 8x8 super-resolution of the digits (SR3 / Palette: the low-resolution image is an input).

Each training digit is downsampled 2x by area averaging to 4x4 and upsampled back to 8x8 by
bicubic interpolation (`config.data.cond = "sr"`, `jaxdiff.data.derived_inputs`); that image,
"x_cond", is concatenated to the noisy input's channels (`model.cond_channels = 1`), and the
network learns the 8x8 digit given it. The bicubic image is also the baseline the samples are
measured against. The network is configs/digits.py's, without labels.

    python train.py --config=configs/digits_sr.py --workdir=runs/digits_sr
    python scripts/demo_conditioning.py sr --workdir=runs/digits_sr
"""

import ml_collections

from jaxdiff.configs import digits


def get_config() -> ml_collections.ConfigDict:
  config = digits.get_config()

  d = config.data
  d.cond = "sr"  # batches gain "x_cond": bicubic(4x4 area downsampling)
  d.sr_factor = 2
  d.num_classes = 0  # class-blind: the low-resolution image is the only condition

  m = config.model
  m.num_classes = 0
  m.cond_channels = 1  # x_cond concatenated to the input: 2 channels in, 1 out

  t = config.train
  t.num_steps = 2000
  t.label_dropout = 0.0  # nothing to drop: x_cond is always given
  t.num_sample_images = 64  # periodic grids: the first 64 held-out digits, super-resolved

  config.sample.guidance_scale = 1.0
  config.sample.batch_size = 128
  return config
