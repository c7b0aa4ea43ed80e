"""DDIM-50 sampling wall time, jaxdiff vs diffusers, interleaved in one process.

jaxdiff: `jaxdiff.sample(..., sampler="ddim", num_steps=50)`, the whole loop one compiled
`lax.scan` (compiled before timing). diffusers: `UNet2DModel` in eval mode +
`DDIMScheduler` (same linear schedule, leading spacing), a Python loop under
`torch.no_grad()`.

    python benchmarks/bench_sample.py --rows=tiny,small,cifar10 [--quick]
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--rows", default="tiny,small,cifar10")
  p.add_argument("--batch", type=int, default=0, help="override the network's sampling batch")
  p.add_argument("--num-steps", type=int, default=50)
  p.add_argument("--reps", type=int, default=0, help="timed runs per framework")
  p.add_argument("--no-torch", action="store_true")
  common.add_common_flags(p)
  args = p.parse_args(argv)
  common.setup(args)

  env = common.environment()
  print(
    f"# {env['date']}  {env['cpu']} x{env['cores']}  load {env['loadavg']}  XLA_FLAGS={env['xla_flags']!r}"
  )
  header = [
    "network",
    "batch",
    "params jax/torch",
    f"jax DDIM-{args.num_steps} s",
    "torch s",
    "speed-up (torch/jax)",
    "jax first call s",
  ]
  rows = []
  for name in [r for r in args.rows.split(",") if r]:
    net = common.NETWORKS[name]
    batch = args.batch or net.sample_batch
    reps = args.reps or (1 if args.quick else net.sample_reps)
    jax_fn, jinfo = common.jax_ddim(net, batch, args.num_steps)
    fns = {"jax": jax_fn}
    if not args.no_torch:
      torch_fn, tinfo = common.torch_ddim(net, batch, args.num_steps)
      fns.update(common.torch_variants(torch_fn, common.torch_thread_counts(args)))
      fns = common.prune_torch(fns)
    # jax is compiled and has run once already (first call); torch warms up with one step
    # worth of work inside its first timed loop only, so give it one untimed run as well.
    times = common.interleaved(fns, reps, warmup=0 if args.quick else 1)
    jt = common.median(times["jax"])
    rec = dict(
      bench="ddim",
      network=name,
      batch=batch,
      num_steps=args.num_steps,
      perf=not args.no_perf,
      jax_params=jinfo["params"],
      jax_s=jt,
      jax_times=times["jax"],
      jax_first_call_s=jinfo["first_call_s"],
      tag=args.tag,
      env=env,
      quick=args.quick,
    )
    row = [name, batch, f"{jinfo['params'] / 1e6:.2f}M", jt]
    if len(fns) > 1:
      tname, tt = common.best_torch(times)
      rec.update(
        torch_params=tinfo["params"],
        torch_s=tt,
        torch_best=tname,
        torch_times={k: v for k, v in times.items() if k != "jax"},
        speedup=tt / jt,
      )
      row[0] += f" ({tname})"
      row[2] += f" / {tinfo['params'] / 1e6:.2f}M"
      row += [tt, tt / jt]
    else:
      row += [float("nan"), float("nan")]
    row.append(jinfo["first_call_s"])
    common.finish_row("sample", rec, header, row, rows)
  common.print_summary(header, rows)


if __name__ == "__main__":
  main()
