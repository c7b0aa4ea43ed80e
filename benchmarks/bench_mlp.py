"""2-D sampler: 1000-step DDPM sampling with the toy MLP (configs/toy2d.py: 4 residual blocks of
width 128, sinusoidal time embedding), jaxdiff vs a PyTorch eager MLP of the same layout and
widths running the 1000-step loop in Python, at batch 1 and batch 1000, interleaved.

    python benchmarks/bench_mlp.py [--batches=1,1000] [--quick]
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
import jax  # noqa: E402

import jaxdiff  # noqa: E402
from jaxdiff import schedules  # noqa: E402
from jaxdiff.models import create_model  # noqa: E402


def torch_mlp(hidden: int, layers: int, dim: int = 2):
  """The jaxdiff MLP's layout in torch: sinusoidal embedding -> Dense, SiLU, Dense; Dense in;
  `layers` pre-LayerNorm residual blocks h + W2 silu(W1 silu(LN h) + P silu(emb)); LayerNorm,
  SiLU, Dense out."""
  import torch
  from torch import nn

  class Block(nn.Module):
    def __init__(self):
      super().__init__()
      self.norm = nn.LayerNorm(hidden, eps=1e-6)
      self.dense_1 = nn.Linear(hidden, hidden)
      self.emb_proj = nn.Linear(hidden, hidden)
      self.dense_2 = nn.Linear(hidden, hidden)

    def forward(self, h, emb):
      r = self.dense_1(nn.functional.silu(self.norm(h))) + self.emb_proj(nn.functional.silu(emb))
      return h + self.dense_2(nn.functional.silu(r))

  class MLP(nn.Module):
    def __init__(self):
      super().__init__()
      half = hidden // 2
      self.register_buffer("freqs", torch.exp(-math.log(10000.0) * torch.arange(half) / (half - 1)))
      self.t1, self.t2 = nn.Linear(hidden, hidden), nn.Linear(hidden, hidden)
      self.dense_in = nn.Linear(dim, hidden)
      self.blocks = nn.ModuleList(Block() for _ in range(layers))
      self.norm_out = nn.LayerNorm(hidden, eps=1e-6)
      self.dense_out = nn.Linear(hidden, dim)

    def forward(self, x, t):
      args = t.float()[:, None] * self.freqs[None]
      emb = self.t2(nn.functional.silu(self.t1(torch.cat([args.sin(), args.cos()], -1))))
      h = self.dense_in(x)
      for b in self.blocks:
        h = b(h, emb)
      return self.dense_out(nn.functional.silu(self.norm_out(h)))

  return MLP().eval()


def torch_ddpm(model, batch: int, T: int = 1000):
  """Ancestral DDPM (posterior variance beta~) in eager PyTorch, one Python iteration per step."""
  import torch

  betas = torch.linspace(1e-4, 0.02, T, dtype=torch.float64)
  alphas = 1 - betas
  ac = torch.cumprod(alphas, 0)
  ac_prev = torch.cat([torch.ones(1, dtype=torch.float64), ac[:-1]])
  coef_eps = (betas / (1 - ac).sqrt()).float()
  inv_sqrt_a = (1 / alphas.sqrt()).float()
  sigma = (betas * (1 - ac_prev) / (1 - ac)).sqrt().float()
  ts = [torch.full((batch,), i, dtype=torch.long) for i in range(T)]
  gen = torch.Generator().manual_seed(0)

  def run():
    x = torch.randn(batch, 2, generator=gen)
    with torch.no_grad():
      for i in reversed(range(T)):
        eps = model(x, ts[i])
        x = inv_sqrt_a[i] * (x - coef_eps[i] * eps)
        if i > 0:
          x = x + sigma[i] * torch.randn(x.shape, generator=gen)
    return x

  return run


def jax_ddpm(batch: int, T: int = 1000):
  config = common.load_config_file("toy2d")
  model = create_model(config)
  params = model.init(jax.random.PRNGKey(0), jax.numpy.zeros((1, 2)), jax.numpy.zeros((1,), jax.numpy.int32))[
    "params"
  ]
  fn = jaxdiff.bind(model.apply, {"params": params})
  schedule = schedules.linear(T)
  key = jax.random.PRNGKey(0)
  run = lambda: jax.block_until_ready(
    jaxdiff.sample(fn, schedule, (batch, 2), key, sampler="ddpm", num_steps=T)
  )
  t0 = time.perf_counter()
  run()
  return run, time.perf_counter() - t0, config


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--batches", default="1,1000")
  p.add_argument("--reps", type=int, default=0)
  common.add_common_flags(p)
  args = p.parse_args(argv)
  common.setup(args)
  import torch

  env = common.environment()
  print(f"# {env['date']}  {env['cpu']} x{env['cores']}  load {env['loadavg']}")
  header = ["batch", "jax s", "torch eager s", "speed-up (torch/jax)", "jax first call s"]
  rows = []
  for batch in [int(b) for b in args.batches.split(",") if b]:
    reps = args.reps or (3 if args.quick else 7)
    jrun, first, config = jax_ddpm(batch)
    torch.manual_seed(0)
    model = torch_mlp(config.model.hidden_dim, config.model.num_layers)
    fns = {"jax": jrun}
    fns.update(common.torch_variants(torch_ddpm(model, batch), common.torch_thread_counts(args)))
    fns = common.prune_torch(fns)
    times = common.interleaved(fns, reps, warmup=1)
    jt = common.median(times["jax"])
    tname, tt = common.best_torch(times)
    rec = dict(
      bench="mlp_ddpm1000",
      batch=batch,
      jax_s=jt,
      jax_times=times["jax"],
      torch_s=tt,
      torch_best=tname,
      torch_times={k: v for k, v in times.items() if k != "jax"},
      speedup=tt / jt,
      jax_first_call_s=first,
      perf=not args.no_perf,
      tag=args.tag,
      env=env,
      loadavg_after=common.load_average(),
      quick=args.quick,
    )
    common.append_result("mlp", rec)
    rows.append([f"{batch} ({tname})", jt, tt, tt / jt, first])
    common.print_table(header, rows[-1:])
  common.print_summary(header, rows)


if __name__ == "__main__":
  main()
