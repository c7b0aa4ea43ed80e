"""Digits generated from a short caption through cross-attention (the latent-diffusion arrangement).

Every training digit comes with a three-token caption computed from its label and its pixels
(`jaxdiff.data.captions`): its class, "thin" or "thick" (stroke weight against the class's
median) and "slanted-left", "upright" or "slanted-right" (shear against the class's tertiles),
e.g. "3 thick slanted-right". The network has no class embedding: it learns the class and the
two attributes from the caption alone. Tokens are embedded by a learned 15 x 64 table inside
the network; transformer blocks (self-attention, cross-attention to the caption, GEGLU
feed-forward) sit at 8x8, 4x4 and in the middle. 10% of the captions are dropped to the
learned null context (context dropout = label dropout), which makes the same network the
unconditional branch of classifier-free guidance (sample.guidance_scale = 2).

    python train.py --config=configs/digits_context.py --workdir=runs/digits_context
    python scripts/demo_conditioning.py context --workdir=runs/digits_context
"""

import ml_collections

from jaxdiff.configs import digits


def get_config() -> ml_collections.ConfigDict:
  config = digits.get_config()

  d = config.data
  d.cond = "caption"  # batches gain "context": int32 [b, 3] captions
  d.num_classes = 10  # the labels the captions are made from

  m = config.model
  m.num_classes = 0  # no class embedding: the class is the caption's first token
  m.attention_resolutions = (8, 4)
  m.context_dim = 64
  m.context_vocab = 15  # len(jaxdiff.data.captions.VOCAB)
  m.context_null = "learned"  # one learned null token
  m.context_null_length = 1
  m.transformer_ff_mult = 2

  t = config.train
  t.num_steps = 3000
  t.context_dropout = 0.1
  t.num_sample_images = 60  # periodic grids: each of the 60 captions once, one row per class

  config.sample.guidance_scale = 2.0
  config.sample.batch_size = 120
  return config
