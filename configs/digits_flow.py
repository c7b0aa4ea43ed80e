"""The digits demo as a rectified-flow / flow-matching model (Liu et al. 2022; Lipman et al.
2023), trained as SD3 does (Esser et al. 2024): x_t = (1 - t) x0 + t eps, the network predicts
the velocity eps - x0, t is drawn logit-normally (m = 0, s = 1) and enters the network as 1000 t.
The same network, data and training budget as configs/digits.py; sampled with Euler on the flow
grid (diffusers' FlowMatchEulerDiscreteScheduler).

    python train.py --config=configs/digits_flow.py --workdir=runs/digits_flow
    python sample.py --workdir=runs/digits_flow --num_samples=1000 --sampler=heun --num_steps=5
"""

import ml_collections

from jaxdiff.configs import digits


def get_config() -> ml_collections.ConfigDict:
  config = digits.get_config()
  f = config.diffusion
  f.process = "flow"
  f.prediction = "flow"
  f.time_sampling = "logit_normal"
  s = config.sample
  s.sampler = "euler"
  s.num_steps = 20
  return config
