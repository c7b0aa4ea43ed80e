"""DiT-S/2 vs diffusers' DiTTransformer2DModel (the same layout), interleaved in
one process: training images/s (one train step = noise + timesteps, forward, MSE on eps, backward,
global-norm clipping, Adam, EMA) and DDIM-50 wall time (jaxdiff: one compiled lax.scan; diffusers:
the DDIMScheduler loop under torch.no_grad), class-conditional on 32x32x4 latents (1000 classes).

    python benchmarks/bench_dit.py [--variant=S/2] [--batch=8] [--sample-batch=4] [--quick]

diffusers' DiT holds its own copy of the time + class embedder in every block (fed the same
inputs: after conversion all copies are equal), so it has (depth - 1) x 630,912 more parameters
for S/2 (39,798,928 vs 32,858,896) but the same FLOPs up to those per-example embedder MLPs.

Results: results/dit.jsonl (one line per measurement, with the environment and the load).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

import jaxdiff  # noqa: E402
from jaxdiff import perf, schedules  # noqa: E402
from jaxdiff.models import count_params, create_model  # noqa: E402
from jaxdiff.models.dit import dit_variant  # noqa: E402
from jaxdiff.training import create_train_state, make_train_step  # noqa: E402

SIZE, CHANNELS, CLASSES = 32, 4, 1000


def dit_config(variant: str, batch: int):
  config = common.load_config_file("default")
  config.model.name = "dit"
  config.model.dit_variant = variant
  config.data.image_size = SIZE
  config.data.channels = config.model.in_channels = CHANNELS
  config.data.num_classes = config.model.num_classes = CLASSES
  config.train.batch_size = batch
  config.optim.warmup_steps = 0
  return config


def diffusers_dit(variant: str):
  """diffusers' DiTTransformer2DModel with the variant's sizes (adaLN-Zero, class labels)."""
  from diffusers import DiTTransformer2DModel

  v = dit_variant(variant)
  return DiTTransformer2DModel(
    num_attention_heads=v["num_heads"],
    attention_head_dim=v["hidden_size"] // v["num_heads"],
    in_channels=CHANNELS,
    out_channels=CHANNELS,
    num_layers=v["depth"],
    sample_size=SIZE,
    patch_size=v["patch_size"],
    num_embeds_ada_norm=CLASSES,
  )


def jax_train(variant: str, batch: int):
  config = dit_config(variant, batch)
  model = create_model(config)
  schedule = schedules.linear(1000)
  state = create_train_state(config, model, jax.random.key(0))
  x = {
    "x": jax.random.normal(jax.random.key(1), (batch, SIZE, SIZE, CHANNELS)),
    "label": jnp.arange(batch, dtype=jnp.int32) % CLASSES,
  }
  key = jax.random.key(2)
  jitted = jax.jit(make_train_step(config, model, schedule), donate_argnums=(0,))
  t0 = time.perf_counter()
  compiled = jitted.lower(state, x, key).compile(compiler_options=perf.compiler_options())
  compile_s = time.perf_counter() - t0
  holder = {"state": state}

  def run():
    s, _ = compiled(holder["state"], x, key)
    jax.block_until_ready(s)
    holder["state"] = s

  return run, dict(params=count_params(state.params), compile_s=compile_s, flops=common.xla_flops(compiled))


def torch_train(variant: str, batch: int, grad_clip: float = 1.0, ema_decay: float = 0.9999):
  import torch

  torch.manual_seed(0)
  model = diffusers_dit(variant).train()
  params = [p for p in model.parameters() if p.requires_grad]
  ema = [p.detach().clone() for p in params]
  opt = torch.optim.Adam(params, lr=2e-4, foreach=True)
  ac = torch.cumprod(1 - torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64), 0).float()
  x0 = torch.randn(batch, CHANNELS, SIZE, SIZE)
  labels = torch.arange(batch) % CLASSES
  gen = torch.Generator().manual_seed(0)

  def step():
    t = torch.randint(0, 1000, (batch,), generator=gen)
    eps = torch.randn(x0.shape, generator=gen)
    a = ac[t].view(-1, 1, 1, 1)
    out = model(a.sqrt() * x0 + (1 - a).sqrt() * eps, timestep=t, class_labels=labels).sample
    loss = torch.nn.functional.mse_loss(out, eps)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, grad_clip, foreach=True)
    opt.step()
    opt.zero_grad(set_to_none=True)
    with torch.no_grad():
      torch._foreach_lerp_(ema, params, 1.0 - ema_decay)

  return step, dict(params=sum(p.numel() for p in params))


def jax_ddim(variant: str, batch: int, num_steps: int):
  config = dit_config(variant, batch)
  model = create_model(config)
  shape = (batch, SIZE, SIZE, CHANNELS)
  params = model.init(jax.random.key(0), jnp.zeros((1,) + shape[1:]), jnp.zeros((1,), jnp.int32))["params"]
  labels = jnp.arange(batch, dtype=jnp.int32) % CLASSES
  schedule = schedules.linear(1000)
  run = jax.jit(
    lambda p, key: jaxdiff.sample(
      jaxdiff.bind(model.apply, {"params": p}),
      schedule,
      shape,
      key,
      sampler="ddim",
      num_steps=num_steps,
      cond={"y": labels},
    )
  )
  key = jax.random.key(3)
  t0 = time.perf_counter()
  compiled = run.lower(params, key).compile(compiler_options=perf.compiler_options())
  jax.block_until_ready(compiled(params, key))
  first = time.perf_counter() - t0
  return (lambda: jax.block_until_ready(compiled(params, key))), dict(first_call_s=first)


def torch_ddim(variant: str, batch: int, num_steps: int):
  import torch
  from diffusers import DDIMScheduler

  torch.manual_seed(0)
  model = diffusers_dit(variant).eval()
  sched = DDIMScheduler(
    num_train_timesteps=1000, beta_schedule="linear", clip_sample=False, set_alpha_to_one=True, steps_offset=0
  )
  labels = torch.arange(batch) % CLASSES

  def run():
    sched.set_timesteps(num_steps)
    x = torch.randn(batch, CHANNELS, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
      for t in sched.timesteps:
        eps = model(x, timestep=t.expand(batch), class_labels=labels).sample
        x = sched.step(eps, t, x).prev_sample
    return x

  return run


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--variant", default="S/2")
  p.add_argument("--batch", type=int, default=8)
  p.add_argument("--sample-batch", type=int, default=4)
  p.add_argument("--steps", type=int, default=6, help="timed train steps per framework")
  p.add_argument("--reps", type=int, default=2, help="timed DDIM runs per framework")
  p.add_argument("--num-steps", type=int, default=50)
  p.add_argument("--what", default="train,ddim")
  common.add_common_flags(p)
  args = p.parse_args(argv)
  common.setup(args)
  env = common.environment()
  print(f"# {env['date']}  {env['cpu']} x{env['cores']}  load {env['loadavg']}", flush=True)
  threads = common.choose_torch_threads(common.torch_thread_counts(args))
  what = set(args.what.split(","))
  if "train" in what:
    jfn, jinfo = jax_train(args.variant, args.batch)
    tfn, tinfo = torch_train(args.variant, args.batch)
    steps = 2 if args.quick else args.steps
    times = common.interleaved({"jax": jfn, f"torch@{threads}": tfn}, steps, warmup=1)
    jt, tt = common.median(times["jax"]), common.median(times[f"torch@{threads}"])
    rec = dict(
      bench="dit_train",
      variant=args.variant,
      batch=args.batch,
      jax_params=jinfo["params"],
      torch_params=tinfo["params"],
      jax_step_s=jt,
      torch_step_s=tt,
      jax_images_per_s=args.batch / jt,
      torch_images_per_s=args.batch / tt,
      ratio=tt / jt,
      jax_compile_s=jinfo["compile_s"],
      jax_gflops=jinfo["flops"] / jt / 1e9,
      times=times,
      torch_threads=threads,
      tag=args.tag,
      env=env,
      loadavg_after=common.load_average(),
    )
    common.append_result("dit", rec)
    common.print_table(
      ["DiT train", "batch", "params jax / torch", "jax img/s", "torch img/s", "ratio", "compile s"],
      [
        [
          f"DiT-{args.variant}",
          args.batch,
          f"{jinfo['params']:,} / {tinfo['params']:,}",
          args.batch / jt,
          args.batch / tt,
          tt / jt,
          jinfo["compile_s"],
        ]
      ],
    )
  if "ddim" in what:
    jfn, jinfo = jax_ddim(args.variant, args.sample_batch, args.num_steps)
    tfn = torch_ddim(args.variant, args.sample_batch, args.num_steps)
    reps = 1 if args.quick else args.reps
    times = common.interleaved({"jax": jfn, f"torch@{threads}": tfn}, reps, warmup=0 if args.quick else 1)
    jt, tt = common.median(times["jax"]), common.median(times[f"torch@{threads}"])
    rec = dict(
      bench="dit_ddim",
      variant=args.variant,
      batch=args.sample_batch,
      num_steps=args.num_steps,
      jax_s=jt,
      torch_s=tt,
      speedup=tt / jt,
      jax_first_call_s=jinfo["first_call_s"],
      times=times,
      torch_threads=threads,
      tag=args.tag,
      env=env,
      loadavg_after=common.load_average(),
    )
    common.append_result("dit", rec)
    common.print_table(
      [f"DiT DDIM-{args.num_steps}", "batch", "jax s", "torch s", "speed-up", "jax first call s"],
      [[f"DiT-{args.variant}", args.sample_batch, jt, tt, tt / jt, jinfo["first_call_s"]]],
    )


if __name__ == "__main__":
  main()
