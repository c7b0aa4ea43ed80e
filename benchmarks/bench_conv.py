"""Micro-benchmark: one 3x3 convolution, forward + backward (gradients of input and kernel),
at the UNet's shapes, in the implementations a Flax layer could use, against PyTorch's
(oneDNN) conv2d, interleaved in one process. GFLOP/s counts 3 x the forward's 2*B*H*W*9*Ci*Co.

  xla       lax.conv_general_dilated, NHWC / HWIO (flax nn.Conv)
  im2col    the 9 shifted views concatenated on channels, one [BHW, 9Ci] x [9Ci, Co] matmul
  shift9    nine [BHW, Ci] x [Ci, Co] matmuls of shifted views, summed
  torch     torch.nn.functional.conv2d, NCHW (and channels_last)

    python benchmarks/bench_conv.py [--shapes=16x32x128x128,32x16x32x64]
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


def conv_xla(x, w):
  return jax.lax.conv_general_dilated(
    x, w, (1, 1), ((1, 1), (1, 1)), dimension_numbers=("NHWC", "HWIO", "NHWC")
  )


def conv_im2col(x, w):
  b, h, wd, c = x.shape
  xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  cols = jnp.concatenate([xp[:, i : i + h, j : j + wd, :] for i in range(3) for j in range(3)], -1)
  return jnp.dot(cols, w.reshape(9 * c, -1))


def conv_shift9(x, w):
  b, h, wd, c = x.shape
  xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  out = 0
  for i in range(3):
    for j in range(3):
      out = out + jnp.dot(xp[:, i : i + h, j : j + wd, :], w[i, j])
  return out


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--shapes", default="16x32x64x64,16x32x128x128,16x16x256x256,32x16x32x64")
  p.add_argument("--reps", type=int, default=10)
  common.add_common_flags(p)
  args = p.parse_args(argv)
  common.setup(args)
  import torch  # the peer (optional for the rest of jaxdiff)

  threads = common.choose_torch_threads(common.torch_thread_counts(args))
  print(
    f"# torch threads {threads}  load {common.load_average()}  XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}"
  )
  header = ["B x HW x Ci x Co", "impl", "ms", "GFLOP/s"]
  rows = []
  for spec in args.shapes.split(","):
    b, hw, ci, co = (int(v) for v in spec.split("x"))
    rng = np.random.default_rng(0)
    x = rng.standard_normal((b, hw, hw, ci), dtype=np.float32)
    w = rng.standard_normal((3, 3, ci, co), dtype=np.float32) * 0.05
    flops = 3 * 2 * b * hw * hw * 9 * ci * co
    fns = {}
    for name, f in (("xla", conv_xla), ("im2col", conv_im2col), ("shift9", conv_shift9)):
      loss = lambda x, w, f=f: jnp.sum(f(x, w) ** 2)
      g = jax.jit(jax.grad(loss, argnums=(0, 1)))
      jx, jw = jnp.asarray(x), jnp.asarray(w)
      g(jx, jw)[0].block_until_ready()
      fns[name] = lambda g=g, jx=jx, jw=jw: jax.block_until_ready(g(jx, jw))
    for fmt in ("nchw", "channels_last"):
      tx = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()
      if fmt == "channels_last":
        tx = tx.contiguous(memory_format=torch.channels_last)
      tx.requires_grad_(True)
      tw = torch.from_numpy(w).permute(3, 2, 0, 1).contiguous().requires_grad_(True)

      def tstep(tx=tx, tw=tw):
        out = torch.nn.functional.conv2d(tx, tw, padding=1)
        (out**2).sum().backward()
        tx.grad = None
        tw.grad = None

      fns[f"torch_{fmt}"] = tstep
    times = common.interleaved(fns, args.reps, warmup=2)
    for name, ts in times.items():
      t = common.median(ts)
      rows.append([spec, name, 1e3 * t, flops / t / 1e9])
      common.append_result(
        "conv",
        dict(shape=spec, impl=name, s=t, gflops=flops / t / 1e9, loadavg=common.load_average(), tag=args.tag),
      )
    common.print_table(header, rows[-len(times) :])
  common.print_summary(header, rows)


if __name__ == "__main__":
  main()
