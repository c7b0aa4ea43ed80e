"""Regression check for an XLA:CPU limitation: 3x3 convolution *gradients* inside a `lax.scan`
(a while loop) run many times slower than the same ops at top level, while forward convolutions
are unaffected. This is why `train.steps_per_dispatch` (several train steps scanned in one call)
must stay 1 on CPU. Run it on a new jax to see whether the limitation is gone.

    python benchmarks/bench_scan_conv.py [--shape=32x16x32] [--xla-default]
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from jaxdiff.perf import compiler_options  # noqa: E402


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--shape", default="32x16x32", help="BxHxC (square maps, C in = C out)")
  p.add_argument("--length", type=int, default=4, help="scan length")
  p.add_argument("--reps", type=int, default=5)
  p.add_argument("--xla-default", action="store_true", help="XLA's default options, not jaxdiff's")
  common.add_common_flags(p)
  args = p.parse_args(argv)
  opts = None if args.xla_default else compiler_options()
  b, h, c = (int(v) for v in args.shape.split("x"))
  key = jax.random.key(0)
  x = jax.random.normal(key, (b, h, h, c))
  w = 0.05 * jax.random.normal(jax.random.fold_in(key, 1), (3, 3, c, c))

  def conv(x, w):
    return jax.lax.conv_general_dilated(
      x, w, (1, 1), ((1, 1), (1, 1)), dimension_numbers=("NHWC", "HWIO", "NHWC")
    )

  parts = {
    "forward": lambda x: (conv(x, w), jnp.zeros_like(w)),
    # The cotangent is the (loop-varying) input itself, so nothing can be hoisted or folded.
    "input gradient (dx)": lambda x: (jax.vjp(conv, x, w)[1](x)[0], jnp.zeros_like(w)),
    "kernel gradient (dw)": lambda x: (jnp.zeros_like(x), jax.vjp(conv, x, w)[1](x)[1]),
  }

  def timed(fn, *a):
    return common.timed(fn, *a, reps=args.reps)

  rows = []
  for name, f in parts.items():
    top = jax.jit(f).lower(x).compile(compiler_options=opts)

    def body(carry, _, f=f):
      a, bb = f(x + carry)
      return carry + 1e-3 * (a.mean() + bb.mean()), None

    scanned = (
      jax.jit(lambda c0: jax.lax.scan(body, c0, None, length=args.length)[0])
      .lower(jnp.float32(0))
      .compile(compiler_options=opts)
    )
    t_top = args.length * timed(top, x)
    t_scan = timed(scanned, jnp.float32(0))
    rows.append([name, 1e3 * t_top, 1e3 * t_scan, t_scan / t_top])
    common.append_result(
      "scan_conv",
      dict(
        part=name,
        shape=args.shape,
        length=args.length,
        top_level_s=t_top,
        scan_s=t_scan,
        xla_options=opts or {},
        tag=args.tag,
        env=common.environment(),
      ),
    )
  print(f"# {args.shape}, {args.length} iterations; XLA options {opts or 'XLA default'}")
  common.print_table([f"{args.length} x", "top-level calls ms", "one lax.scan ms", "scan slowdown"], rows)


if __name__ == "__main__":
  main()
