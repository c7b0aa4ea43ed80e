"""A small DiT (Peebles & Xie 2023) on the 8x8 digits: the demo's data, EDM recipe and training
length (configs/digits_edm.py: 2,500 steps at batch 128) with the UNet replaced by a diffusion
transformer, sampled with DPM-Solver++(2M) in 50 steps (50 NFE) on the Karras grid.

Patch 2 (16 tokens of 2x2 pixels), hidden size 128, 4 adaLN-Zero blocks, 4 heads (the default
num_heads), MLP ratio 4, 10 classes + the null class: 1.27M parameters. Its training step costs
the same CPU time as the demo UNet's (0.17 CPU-s at batch 128, measured side by side), so the
2,500 steps take the demo's training time; 6 blocks would cost 1.55x per step. Result: README,
Models, "DiT".

    python train.py --config=configs/digits_dit.py --workdir=runs/digits_dit
    python sample.py --workdir=runs/digits_dit --num_samples=1000 --output=runs/digits_dit/generated
"""

import ml_collections

from jaxdiff.config_utils import sibling_config


def get_config() -> ml_collections.ConfigDict:
  config = sibling_config(__file__, "digits_edm")

  m = config.model
  m.name = "dit"  # patch_size 2 and num_heads 4 are the defaults
  m.hidden_size = 128
  m.depth = 4

  config.sample.num_steps = 50  # dpmpp_2m: one network evaluation per step
  return config
