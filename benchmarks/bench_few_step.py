"""One-step models: the MeanFlow train step (its JVP included) against a plain flow-matching step
of the same two-time network, and one-step sampling against the EDM demo's 20-step sampler.

Both train steps are the library's jitted step (`jaxdiff.training.make_train_step`: loss,
gradients, Adam, EMA) on configs/digits_meanflow.py's UNet at its batch; the flow-matching step is
the same config with prediction "flow" (the second time at its default r = t). They run
interleaved in one process (A, B, B, A, ...), so machine load hits both alike; the figure is
the ratio of median step times. Sampling: images/s of `meanflow` at 1 and 2 steps against
`dpmpp_2m` at 20 steps on configs/digits_edm.py's network (same UNet but one time), batch 100.
The demo's train step (configs/digits_edm.py) and the shortcut and consistency recipes' steps run in
the same rounds, so each recipe's training cost (default steps x step time) is given as a multiple
of the demo's.

    python benchmarks/bench_few_step.py [--reps=20]
"""

from __future__ import annotations

import argparse
import os
import sys

import jax
import jax.numpy as jnp

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

from jaxdiff.config_sampling import sample_from_config  # noqa: E402
from jaxdiff.config_utils import process_from_config, validate_config  # noqa: E402
from jaxdiff.data.embedded import load_digits_split  # noqa: E402
from jaxdiff.models import create_model  # noqa: E402
from jaxdiff.training.state import create_train_state  # noqa: E402
from jaxdiff.training.step import make_train_step  # noqa: E402

FEW_STEP_RECIPES = ("digits_meanflow", "digits_shortcut", "digits_consistency")


def train_fn(config):
  """A zero-argument callable running one jitted train step (state carried, donated)."""
  model = create_model(config)
  process = process_from_config(config)
  state = create_train_state(config, model, jax.random.key(0))
  step = jax.jit(make_train_step(config, model, process), donate_argnums=(0,))
  images, labels = load_digits_split("train")
  b = int(config.train.batch_size)
  batch = {"x": jnp.asarray(images[:b]), "label": jnp.asarray(labels[:b], jnp.int32)}
  key = jax.random.key(1)
  holder = {"state": state}

  def run():
    holder["state"], m = step(holder["state"], batch, key)
    jax.block_until_ready(m["loss"])

  return run


def sample_fn(config, num: int, **overrides):
  model = create_model(config)
  process = process_from_config(config)
  x, t = jnp.zeros((1, 8, 8, 1)), jnp.zeros((1,))
  params = model.init(jax.random.key(0), x, t, y=jnp.zeros((1,), jnp.int32))["params"]
  labels = jnp.arange(num) % 10
  fn = jax.jit(lambda p, k: sample_from_config(config, model, process, p, k, num, labels, **overrides))
  return lambda: jax.block_until_ready(fn(params, jax.random.key(2)))


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--reps", type=int, default=20, help="timed rounds per function")
  p.add_argument("--num", type=int, default=100, help="sampling batch")
  args = p.parse_args(argv)
  env = common.environment()
  print(f"# {env['date']}  {env['cpu']} x{env['cores']}  load {env['loadavg']}  jax {env['jax']}")

  mf = validate_config(common.load_config_file("digits_meanflow"))
  fm = validate_config(common.load_config_file("digits_meanflow"))
  fm.diffusion.prediction = "flow"
  fm.few_step.method = ""
  edm = validate_config(common.load_config_file("digits_edm"))
  recipes = {name: validate_config(common.load_config_file(name)) for name in FEW_STEP_RECIPES}
  fns = {"meanflow": train_fn(mf), "flow_matching": train_fn(fm), "demo": train_fn(edm)}
  fns.update({name: train_fn(c) for name, c in recipes.items() if name != "digits_meanflow"})
  times = common.interleaved(fns, args.reps)
  med = {k: common.median(v) for k, v in times.items()}
  t_mf, t_fm = med["meanflow"], med["flow_matching"]
  b = int(mf.train.batch_size)
  print(f"train step, batch {b}: meanflow {t_mf * 1e3:.1f} ms, flow matching {t_fm * 1e3:.1f} ms, "
        f"ratio {t_mf / t_fm:.2f}x")  # fmt: skip
  # each recipe's training (its default steps x its step time) against the demo's (make demo:
  # configs/digits_edm.py), the recipes' budget being twice the demo's
  demo_cost = med["demo"] * int(edm.train.num_steps)
  cost = {}
  for name, c in recipes.items():
    t = med["meanflow" if name == "digits_meanflow" else name]
    cost[name] = t * int(c.train.num_steps) / demo_cost
    print(f"training cost, {name}: {int(c.train.num_steps)} steps x {t * 1e3:.1f} ms = "
          f"{cost[name]:.2f}x the demo's {int(edm.train.num_steps)} x {med['demo'] * 1e3:.1f} ms")  # fmt: skip

  fns = {
    "meanflow_1": sample_fn(mf, args.num, num_steps=1),
    "meanflow_2": sample_fn(mf, args.num, num_steps=2),
    "edm_dpmpp_2m_20": sample_fn(edm, args.num, num_steps=20),
  }
  stimes = common.interleaved(fns, max(args.reps // 2, 3))
  rates = {k: args.num / common.median(v) for k, v in stimes.items()}
  print("sampling images/s, batch", args.num, ": " + ", ".join(f"{k} {v:.0f}" for k, v in rates.items()))
  print(f"one-step vs 20-step: {rates['meanflow_1'] / rates['edm_dpmpp_2m_20']:.1f}x")
  common.append_result(
    "few_step",
    dict(
      env=env,
      batch=b,
      meanflow_ms=t_mf * 1e3,
      flow_matching_ms=t_fm * 1e3,
      ratio=t_mf / t_fm,
      step_ms={k: v * 1e3 for k, v in med.items()},
      training_cost_vs_demo=cost,
      sample_images_per_s=rates,
      reps=args.reps,
    ),  # fmt: skip
  )


if __name__ == "__main__":
  main()
