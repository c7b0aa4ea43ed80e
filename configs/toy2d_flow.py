"""The S-curve with rectified flow: the MLP of configs/toy2d.py predicting the velocity
eps - x0 with logit-normal t (SD3), sampled with Heun on the flow grid.

    python train.py --config=configs/toy2d_flow.py --workdir=runs/toy2d_flow
    python sample.py --workdir=runs/toy2d_flow --num_samples=2000 --trajectory
"""

import ml_collections

from jaxdiff.config_utils import sibling_config


def get_config() -> ml_collections.ConfigDict:
  config = sibling_config(__file__, "toy2d")
  f = config.diffusion
  f.process = "flow"
  f.prediction = "flow"
  f.time_sampling = "logit_normal"
  s = config.sample
  s.sampler = "heun"
  s.num_steps = 20  # 39 network evaluations (the S-curve's thin arms need more than images do)
  return config
