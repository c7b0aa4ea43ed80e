"""Micro-benchmark: the three parts of a 3x3 convolution's training cost, separately, at the UNet
shapes: forward, input gradient (dx) and kernel gradient (dw) in XLA (jaxdiff's compile options
by default; `--xla-default` for XLA's own), the kernel gradient also as an im2col matmul and as
nine shifted matmuls, against PyTorch's channels-last conv2d forward and forward+backward.
Figures are GFLOP/s of the forward's 2*B*H*W*9*C*C (so PyTorch's forward+backward column is a
third of its true rate); the last two columns compare whole fwd+dx+dw times.

    python benchmarks/bench_conv_grads.py [--shapes=32x16x32,16x32x64] [--xla-default]
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from jaxdiff.perf import compiler_options  # noqa: E402


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument(
    "--shapes",
    default="32x16x32,32x8x64,32x4x128,16x32x64,16x16x128,16x8x256,8x32x128,8x16x256",
    help="BxHxC list (square maps, C in = C out)",
  )
  p.add_argument("--reps", type=int, default=10)
  p.add_argument("--xla-default", action="store_true", help="XLA's default options, not jaxdiff's")
  common.add_common_flags(p)
  args = p.parse_args(argv)
  common.setup(args)
  import torch  # the peer (optional for the rest of jaxdiff)

  opts = None if args.xla_default else compiler_options()
  threads = common.choose_torch_threads(common.torch_thread_counts(args))
  torch.set_num_threads(threads)

  def conv(x, w):
    return jax.lax.conv_general_dilated(
      x, w, (1, 1), ((1, 1), (1, 1)), dimension_numbers=("NHWC", "HWIO", "NHWC")
    )

  def views(x):
    b, h, wd, c = x.shape
    xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    return [xp[:, i : i + h, j : j + wd, :] for i in range(3) for j in range(3)]

  def dw_im2col(x, dy):
    return jnp.einsum("bhwk,bhwo->ko", jnp.concatenate(views(x), -1), dy).reshape(3, 3, x.shape[-1], -1)

  def dw_shift9(x, dy):
    return jnp.stack([jnp.einsum("bhwc,bhwo->co", v, dy) for v in views(x)]).reshape(3, 3, x.shape[-1], -1)

  def timed(fn, *a):
    return common.timed(fn, *a, reps=args.reps, warmup=2)

  header = [
    "BxHxC",
    "fwd",
    "dx",
    "dw",
    "dw im2col",
    "dw shift9",
    "torch fwd",
    "torch fwd+bwd",
    "jax fwd+dx+dw ms",
    "torch ms",
  ]
  rows = []
  for spec in [s for s in args.shapes.split(",") if s]:
    b, h, c = (int(v) for v in spec.split("x"))
    key = jax.random.key(0)
    x = jax.random.normal(key, (b, h, h, c))
    w = 0.05 * jax.random.normal(jax.random.fold_in(key, 1), (3, 3, c, c))
    dy = jax.random.normal(jax.random.fold_in(key, 2), (b, h, h, c))
    comp = lambda f, *a: jax.jit(f).lower(*a).compile(compiler_options=opts)
    fwd = comp(conv, x, w)
    dx = comp(lambda dy, x, w: jax.vjp(conv, x, w)[1](dy)[0], dy, x, w)
    dw = comp(lambda dy, x, w: jax.vjp(conv, x, w)[1](dy)[1], dy, x, w)
    dwi, dws = comp(dw_im2col, x, dy), comp(dw_shift9, x, dy)
    ref = np.asarray(dw(dy, x, w))  # the alternatives must compute the same gradient
    np.testing.assert_allclose(np.asarray(dwi(x, dy)), ref, rtol=2e-3, atol=2e-3)
    np.testing.assert_allclose(np.asarray(dws(x, dy)), ref, rtol=2e-3, atol=2e-3)
    tx = torch.randn(b, c, h, h).contiguous(memory_format=torch.channels_last).requires_grad_(True)
    tw = (0.05 * torch.randn(c, c, 3, 3)).requires_grad_(True)
    tdy = torch.randn(b, c, h, h).contiguous(memory_format=torch.channels_last)

    def t_fwd():
      with torch.no_grad():
        torch.nn.functional.conv2d(tx, tw, padding=1)

    def t_all():
      y = torch.nn.functional.conv2d(tx, tw, padding=1)
      torch.autograd.grad(y, (tx, tw), tdy)

    r = dict(
      fwd=timed(fwd, x, w),
      dx=timed(dx, dy, x, w),
      dw=timed(dw, dy, x, w),
      dw_im2col=timed(dwi, x, dy),
      dw_shift9=timed(dws, x, dy),
      torch_fwd=timed(t_fwd),
      torch_all=timed(t_all),
    )
    gf = 2 * b * h * h * 9 * c * c / 1e9
    jax_ms = 1e3 * (r["fwd"] + r["dx"] + r["dw"])
    rows.append(
      [spec]
      + [gf / r[k] for k in ("fwd", "dx", "dw", "dw_im2col", "dw_shift9", "torch_fwd", "torch_all")]
      + [jax_ms, 1e3 * r["torch_all"]]
    )
    common.append_result(
      "conv_grads",
      dict(
        shape=spec,
        times_s=r,
        gflop_fwd=gf,
        torch_threads=threads,
        xla_options=opts or {},
        tag=args.tag,
        env=common.environment(),
      ),
    )
    common.print_table(header, rows[-1:])
  print(f"# summary (GFLOP/s of the forward's FLOPs; torch@{threads}; XLA options {opts or 'XLA default'})")
  common.print_table(header, rows)


if __name__ == "__main__":
  main()
