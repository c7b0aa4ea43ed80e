"""jaxdiff.models.AutoencoderKL vs diffusers' AutoencoderKL (torch CPU) with the same weights, interleaved in
one process: encode (posterior mean and log-variance) and decode images/s.

    python benchmarks/bench_vae.py [--layout=sd] [--size=64] [--batch=2] [--reps=3] [--quick]

--layout: "sd" (Stable Diffusion 1.x/2.x / SDXL: 128-256-512-512 channels, 2 blocks per level, 4 latent
channels) or "flux" (the same with 16 latent channels and no quant convs). Random diffusers weights are
saved and read back with jaxdiff.interop.load_diffusers_vae, so both run the same network.

Results: results/vae.jsonl (one line per measurement, with the environment and the load).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
import jax  # noqa: E402
import numpy as np  # noqa: E402

from jaxdiff.interop import load_diffusers_vae  # noqa: E402

LAYOUTS = {
  "sd": dict(latent_channels=4),
  "flux": dict(latent_channels=16, use_quant_conv=False, use_post_quant_conv=False, shift_factor=0.1159),
}


def _models(layout: str, size: int):
  import diffusers
  import torch

  torch.manual_seed(0)
  theirs = diffusers.AutoencoderKL(
    block_out_channels=(128, 256, 512, 512),
    layers_per_block=2,
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    sample_size=size,
    **LAYOUTS[layout],
  ).eval()
  with tempfile.TemporaryDirectory() as d:
    theirs.save_pretrained(d)
    model, variables = load_diffusers_vae(d)
  return theirs, model, variables


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--layout", default="sd", choices=sorted(LAYOUTS))
  p.add_argument("--size", type=int, default=64, help="image side in pixels")
  p.add_argument("--batch", type=int, default=2)
  p.add_argument("--reps", type=int, default=3)
  common.add_common_flags(p)
  args = p.parse_args(argv)
  common.setup(args)
  import torch

  env = common.environment()
  print(f"# {env['date']}  {env['cpu']} x{env['cores']}  load {env['loadavg']}", flush=True)
  threads = common.choose_torch_threads(common.torch_thread_counts(args))
  theirs, model, variables = _models(args.layout, args.size)
  rng = np.random.RandomState(0)
  x = rng.uniform(-1, 1, (args.batch, args.size, args.size, 3)).astype(np.float32)
  f = 8
  z = rng.randn(args.batch, args.size // f, args.size // f, model.latent_channels).astype(np.float32)
  enc = jax.jit(lambda v, x: model.apply(v, x, method=model.encode))
  dec = jax.jit(lambda v, z: model.apply(v, z, method=model.decode))
  xt, zt = torch.from_numpy(x.transpose(0, 3, 1, 2).copy()), torch.from_numpy(z.transpose(0, 3, 1, 2).copy())

  def torch_encode():
    with torch.no_grad():
      return theirs.encode(xt).latent_dist.mean

  def torch_decode():
    with torch.no_grad():
      return theirs.decode(zt).sample

  rows, header = [], ["VAE " + args.layout, "size", "batch", "jax img/s", "torch img/s", "ratio"]
  reps = 1 if args.quick else args.reps
  for what, jfn, tfn in (
    ("encode", lambda: jax.block_until_ready(enc(variables, x)), torch_encode),
    ("decode", lambda: jax.block_until_ready(dec(variables, z)), torch_decode),
  ):
    times = common.interleaved({"jax": jfn, f"torch@{threads}": tfn}, reps, warmup=1)
    jt, tt = common.median(times["jax"]), common.median(times[f"torch@{threads}"])
    rec = dict(
      bench=f"vae_{what}", layout=args.layout, size=args.size, batch=args.batch, jax_s=jt, torch_s=tt,
      jax_images_per_s=args.batch / jt, torch_images_per_s=args.batch / tt, ratio=tt / jt, times=times,
      torch_threads=threads, tag=args.tag, env=env, loadavg_after=common.load_average(),
    )  # fmt: skip
    common.finish_row(
      "vae", rec, header, [what, args.size, args.batch, args.batch / jt, args.batch / tt, tt / jt], rows
    )
  common.print_summary(header, rows)


if __name__ == "__main__":
  main()
