"""Training throughput, jaxdiff vs diffusers, interleaved in one process.

One train step = noise + timesteps, forward, loss, backward, global-norm clipping, Adam and
the EMA update (jaxdiff: the library's jitted step with the state donated; diffusers:
UNet2DModel + torch.optim.Adam + torch._foreach_lerp_). Figures: images/s (median of the
timed steps after warm-up), achieved GFLOP/s (XLA cost analysis / torch's FlopCounterMode)
and their share of the float32 matmul peak measured in the same run.

    python benchmarks/bench_train.py --rows=tiny,small,cifar10 [--quick]
"""

from __future__ import annotations

import argparse
import ast
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402


def parse_overrides(items):
  out = {}
  for item in items or []:
    k, v = item.split("=", 1)
    try:
      out[k] = ast.literal_eval(v)
    except (ValueError, SyntaxError):
      out[k] = v
  return out


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--rows", default="tiny,small,cifar10")
  p.add_argument("--batch", type=int, default=0, help="override the network's training batch")
  p.add_argument("--steps", type=int, default=0, help="timed steps per framework")
  p.add_argument(
    "--steps-per-dispatch", type=int, default=1, help="jaxdiff train steps scanned in one compiled call"
  )
  p.add_argument("--no-donate", action="store_true")
  p.add_argument("--no-torch", action="store_true", help="jaxdiff only")
  p.add_argument(
    "--set",
    action="append",
    default=[],
    metavar="FIELD=VALUE",
    help="override a config.model field of the jaxdiff network (lever studies)",
  )
  common.add_common_flags(p)
  args = p.parse_args(argv)
  common.setup(args)

  env = common.environment()
  peak = common.matmul_peak()
  print(
    f"# {env['date']}  {env['cpu']} x{env['cores']}  load {env['loadavg']}  XLA_FLAGS={env['xla_flags']!r}"
  )
  print(
    f"# float32 matmul: jnp.dot {peak['jax']:.0f}, torch.mm {peak['torch']:.0f}, torch.mm on "
    f"1 thread {peak['torch_1thread']:.0f} GFLOP/s -> machine peak {peak['peak']:.0f}"
  )
  overrides = parse_overrides(args.set)
  header = [
    "network",
    "batch",
    "params jax/torch",
    "jax img/s",
    "torch img/s",
    "ratio",
    "jax GFLOP/s",
    "jax %peak",
    "torch GFLOP/s",
    "torch %peak",
    "jax flops/img ratio",
    "compile s",
  ]
  rows = []
  for name in [r for r in args.rows.split(",") if r]:
    net = common.NETWORKS[name]
    batch = args.batch or net.train_batch
    steps = args.steps or (net.train_steps_quick if args.quick else net.train_steps)
    k = args.steps_per_dispatch
    jax_fn, jinfo = common.jax_train(
      net, batch, steps_per_dispatch=k, donate=not args.no_donate, model_overrides=overrides
    )
    fns = {"jax": jax_fn}
    tinfo = {}
    if not args.no_torch:
      torch_fn, tinfo = common.torch_train(net, batch)
      fns.update(common.torch_variants(torch_fn, common.torch_thread_counts(args)))
      fns = common.prune_torch(fns)
    jax_reps = max(1, -(-steps // k))
    times = common.interleaved(fns, jax_reps, warmup=1)
    jt = common.median(times["jax"]) / k
    jips = batch / jt
    jgf = jinfo["flops_per_step"] / jt / 1e9
    rec = dict(
      bench="train",
      network=name,
      batch=batch,
      steps_per_dispatch=k,
      donate=not args.no_donate,
      overrides=overrides,
      perf=not args.no_perf,
      jax_params=jinfo["params"],
      jax_step_s=jt,
      jax_images_per_s=jips,
      jax_step_times=times["jax"],
      jax_flops_per_step=jinfo["flops_per_step"],
      jax_gflops=jgf,
      jax_compile_s=jinfo["compile_s"],
      jax_xla_memory=jinfo["xla_memory"],
      matmul_peak=peak,
      tag=args.tag,
      env=env,
      quick=args.quick,
    )
    row = [name, batch, f"{jinfo['params'] / 1e6:.2f}M", jips]
    if len(fns) > 1:
      tname, tt = common.best_torch(times)
      tips = batch / tt
      tgf = tinfo["flops_per_step"] / tt / 1e9
      rec.update(
        torch_params=tinfo["params"],
        torch_step_s=tt,
        torch_images_per_s=tips,
        torch_step_times={k: v for k, v in times.items() if k != "jax"},
        torch_best=tname,
        torch_flops_per_step=tinfo["flops_per_step"],
        torch_gflops=tgf,
        ratio=jips / tips,
      )
      row[2] += f" / {tinfo['params'] / 1e6:.2f}M"
      row[0] += f" ({tname})"
      row += [
        tips,
        jips / tips,
        jgf,
        100 * jgf / peak["peak"],
        tgf,
        100 * tgf / peak["peak"],
        jinfo["flops_per_step"] / tinfo["flops_per_step"],
      ]
    else:
      row += [
        float("nan"),
        float("nan"),
        jgf,
        100 * jgf / peak["peak"],
        float("nan"),
        float("nan"),
        float("nan"),
      ]
    row.append(jinfo["compile_s"])
    common.finish_row("train", rec, header, row, rows)
  common.print_summary(header, rows)


if __name__ == "__main__":
  main()
