"""Several train steps per dispatch (`config.train.steps_per_dispatch = k`) on this backend:
per-step time and compile time for each k, all arms compiled in one process and timed
interleaved (a round calls every arm once; an arm's call runs k steps).

    python benchmarks/bench_spd.py --row=tiny --ks=1,2,4,8                # the library's loop ("auto")
    python benchmarks/bench_spd.py --row=tiny --ks=1,4 --impls=unroll,scan   # both loops

`make_multi_step`'s loops: "unroll" (the k steps written out in one program, an optimisation
barrier on the state between steps) and "scan" (one `lax.scan` over the k steps); "auto" is
unroll on CPU, scan on GPU/TPU. Results: results/spd.jsonl.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

from jaxdiff.training.step import multi_step_impl  # noqa: E402


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--row", default="tiny")
  p.add_argument("--ks", default="1,2,4,8")
  p.add_argument("--impls", default="auto", help="make_multi_step loops to time (k > 1): auto, unroll, scan")
  p.add_argument("--rounds", type=int, default=4, help="interleaved rounds (each arm runs k steps a round)")
  p.add_argument("--batch", type=int, default=0)
  common.add_common_flags(p)
  args = p.parse_args(argv)
  common.setup(args)
  net = common.NETWORKS[args.row]
  batch = args.batch or net.train_batch
  ks = [int(k) for k in args.ks.split(",") if k]
  impls = [i for i in args.impls.split(",") if i]
  env = common.environment()
  print(f"# {env['date']}  {env['cpu']} x{env['cores']}  load {env['loadavg']}", flush=True)
  fns, infos = {}, {}
  for k in ks:
    for impl in impls if k > 1 else ["auto"]:
      name = f"k={k}" + (f" {multi_step_impl(impl)}" if k > 1 else "")
      if name in fns:
        continue
      fns[name], infos[name] = common.jax_train(net, batch, steps_per_dispatch=k, multi_step_impl=impl)
      infos[name]["k"] = k
      print(f"# compiled {name}: {infos[name]['compile_s']:.1f} s", flush=True)
  times = common.interleaved(fns, args.rounds, warmup=1)
  base = next(iter(fns))
  base_step = common.median(times[base]) / infos[base]["k"]
  header = ["arm", "steps/call", "step s", "images/s", "vs k=1", "compile s", "HLO ops"]
  rows = []
  for name, t in times.items():
    k = infos[name]["k"]
    step_s = common.median(t) / k
    ops = sum(1 for line in infos[name]["hlo_text"].splitlines() if " = " in line)
    rows.append([name, k, step_s, batch / step_s, base_step / step_s, infos[name]["compile_s"], ops])
    common.append_result(
      "spd",
      dict(
        row=args.row,
        batch=batch,
        arm=name,
        k=k,
        step_s=step_s,
        images_per_s=batch / step_s,
        speed_vs_k1=base_step / step_s,
        call_times=t,
        compile_s=infos[name]["compile_s"],
        hlo_ops=ops,
        rounds=args.rounds,
        tag=args.tag,
        env=env,
      ),
    )
  print(f"# {args.row} batch {batch}, {args.rounds} interleaved rounds, load after {common.load_average()}")
  common.print_table(header, rows)


if __name__ == "__main__":
  main()
