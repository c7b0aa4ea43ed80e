"""The digits demo as an EDM model (Karras et al. 2022): the same network, data and training
budget as configs/digits.py, with EDM's preconditioning (prediction "edm": the network sees
c_in x and c_noise = ln(sigma)/4 and returns F), log-normal sigma (P_mean -1.2, P_std 1.2) and
EDM's loss weighting. Sampled on the Karras grid (sigma 0.002..80, rho 7) with DPM-Solver++(2M)
in 20 steps: in the same training time it beats the DDPM demo's DDIM-50 (Fréchet 0.98 vs 1.28,
benchmarks/BENCHMARKS.md, "Few-step frontier"), so `make demo` trains this recipe.

    python train.py --config=configs/digits_edm.py --workdir=runs/digits_edm
    python sample.py --workdir=runs/digits_edm --num_samples=1000 --sampler=heun --num_steps=5
"""

import ml_collections

from jaxdiff.configs import digits


def get_config() -> ml_collections.ConfigDict:
  config = digits.get_config()
  f = config.diffusion
  f.process = "edm"
  f.prediction = "edm"
  f.weighting = "edm"
  f.sigma_data = 0.5  # EDM's value for data in [-1, 1]
  s = config.sample
  s.sampler = "dpmpp_2m"
  s.num_steps = 20
  return config
