"""The digits demo as a consistency model, by easy consistency training (ECT, Geng et al. 2024).

The demo's UNet on rectified flow, parameterised as f(x_t, t) = x_t - t F(x_t, t) (prediction
"flow", so f(x, 0) = x exactly), trained so that f(x_t, t) = sg f(x_r, r) with r's noise level
sigma/alpha a factor (1 - delta) below t's; delta shrinks geometrically from 1 (r = 0: plain x0
regression, a diffusion objective) to 0.02 over training, as ECT moves from diffusion to
consistency. ECT on rectified flow rather than sCM's TrigFlow: the same process, network and
time embedding as the other few-step recipes and no JVP. Sampled with the `consistency`
sampler (one step, or two with fresh noise at t = 1/2).

Distillation from a trained run instead (its EMA weights frozen, one Euler step of its ODE as
the target; the teacher must be a rectified-flow run, e.g. configs/digits_flow.py):

    python train.py --config=configs/digits_consistency.py --workdir=runs/digits_consistency
    python train.py --config=configs/digits_consistency.py --workdir=runs/digits_cd \\
      --config.distill.teacher=runs/digits_flow
    python sample.py --workdir=runs/digits_consistency --num_samples=1000 --num_steps=1
"""

import ml_collections

from jaxdiff.configs import digits


def get_config() -> ml_collections.ConfigDict:
  config = digits.get_config()
  f = config.diffusion
  f.process = "flow"
  f.prediction = "flow"
  f.time_sampling = "uniform"
  fs = config.few_step
  fs.method = "consistency"
  fs.delta_start = 1.0
  fs.delta_end = 0.02
  fs.huber_c = 0.03
  config.distill.sampler = "euler"
  s = config.sample
  s.sampler = "consistency"
  s.num_steps = 1
  s.grid = "uniform"
  return config
