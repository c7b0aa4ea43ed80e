"""Shared pieces of the benchmarks: the networks, both frameworks' train steps and samplers,
interleaved timing, the matmul peak, XLA cost analysis and the results files.

Every benchmark measures jaxdiff and the PyTorch peer (HuggingFace diffusers ``UNet2DModel``
+ ``DDIMScheduler`` on PyTorch's CPU build) in the same process, alternating A/B repetitions,
so that the ratio is taken under the same machine load. Import order matters: call
``jaxdiff.perf.configure_performance`` (done by ``setup()``) before JAX creates its backend.
"""

from __future__ import annotations

import dataclasses
import datetime
import importlib.util
import json
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

ROOT = pathlib.Path(__file__).resolve().parent.parent
# Where results are appended; JAXDIFF_BENCH_RESULTS redirects them (the tests' smoke runs do).
RESULTS = pathlib.Path(os.environ.get("JAXDIFF_BENCH_RESULTS") or ROOT / "benchmarks" / "results")
if str(ROOT) not in sys.path:
  sys.path.insert(0, str(ROOT))

import flax  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import jaxlib  # noqa: E402
import numpy as np  # noqa: E402

import jaxdiff  # noqa: E402
from jaxdiff import perf, schedules  # noqa: E402
from jaxdiff.models import count_params, create_model  # noqa: E402
from jaxdiff.training import create_train_state, make_multi_step, make_train_step  # noqa: E402

_SETUP_DONE = False


def add_common_flags(parser) -> None:
  parser.add_argument("--quick", action="store_true", help="fewer repetitions (smoke run)")
  parser.add_argument(
    "--no-perf",
    action="store_true",
    help="do not apply jaxdiff.perf.configure_performance (baseline XLA flags)",
  )
  parser.add_argument(
    "--ynn-off",
    action="store_true",
    help="configure_performance(disable_ynn_fusions=True): the setting the "
    "'main' results of 2026-11-21 were measured with",
  )
  parser.add_argument(
    "--torch-threads",
    default="auto",
    help="torch intra-op threads: 'auto' probes all cores vs 1 thread once "
    "(a conv forward+backward) and times the peer with the faster; or a "
    "number",
  )
  parser.add_argument("--tag", default="", help="free text stored with the results")


def setup(args) -> None:
  """Apply jaxdiff's CPU performance settings (unless --no-perf) before JAX initialises, and
  give torch the same number of threads as cores."""
  global _SETUP_DONE
  if _SETUP_DONE:
    return
  if not getattr(args, "no_perf", False):
    perf.configure_performance(disable_ynn_fusions=getattr(args, "ynn_off", False))
  import torch

  torch.set_num_threads(os.cpu_count() or 1)
  _SETUP_DONE = True


def torch_thread_counts(args) -> list[int]:
  """Thread counts to time the torch peer with. On a shared machine, OpenMP's barriers with
  all cores busy can make torch many times slower than with one thread (figures: BENCHMARKS.md,
  Levers, "diffusers threads"), so by default both are candidates (see `choose_torch_threads`)."""
  if str(args.torch_threads) == "auto":
    cores = os.cpu_count() or 1
    return sorted({cores, 1}, reverse=True)
  return [int(args.torch_threads)]


def torch_variants(fn: Callable[[], Any], counts: list[int]) -> dict[str, Callable[[], Any]]:
  """{"torch@N": fn run with N intra-op threads} for each N."""
  import torch

  def make(n):
    def run():
      torch.set_num_threads(n)
      return fn()

    return run

  return {f"torch@{n}": make(n) for n in counts}


_THREAD_CHOICE: int | None = None


def choose_torch_threads(counts: list[int]) -> int:
  """The torch thread count to time the peer with, from a quick probe (once per process): a
  3x3 conv forward + backward at the UNet's shapes, alternated over `counts`, best median.
  On a shared machine, OpenMP's barriers with all cores busy can make torch many times
  slower than on one thread (BENCHMARKS.md, Levers, "diffusers threads"), so probing once is
  far cheaper than timing a slow variant for every repetition."""
  global _THREAD_CHOICE
  if len(counts) == 1:
    return counts[0]
  if _THREAD_CHOICE is not None:
    return _THREAD_CHOICE
  import torch

  x = torch.randn(16, 128, 32, 32, requires_grad=True)
  w = torch.randn(128, 128, 3, 3, requires_grad=True)

  def make(n):
    def run():
      torch.set_num_threads(n)
      torch.nn.functional.conv2d(x, w, padding=1).square().sum().backward()
      x.grad = w.grad = None

    return run

  times = interleaved({n: make(n) for n in counts}, 5, warmup=1)
  _THREAD_CHOICE = min(counts, key=lambda n: median(times[n]))
  print(
    f"# torch thread probe (conv fwd+bwd, s): "
    f"{ {n: round(median(t), 4) for n, t in times.items()} } -> {_THREAD_CHOICE} threads",
    flush=True,
  )
  torch.set_num_threads(_THREAD_CHOICE)
  return _THREAD_CHOICE


def prune_torch(fns: dict[str, Callable[[], Any]]) -> dict:
  """Keep jaxdiff and the one torch variant `choose_torch_threads` picks."""
  counts = sorted((int(k.split("@")[1]) for k in fns if k.startswith("torch@")), reverse=True)
  if len(counts) < 2:
    return dict(fns)
  keep = f"torch@{choose_torch_threads(counts)}"
  return {k: v for k, v in fns.items() if not k.startswith("torch@") or k == keep}


def best_torch(times: dict[str, list]) -> tuple[str, float]:
  """(name, median seconds) of the fastest torch variant."""
  cands = [(median(v), k) for k, v in times.items() if k.startswith("torch@")]
  t, k = min(cands)
  return k, t


# ----------------------------------------------------------------------------------------------
# Networks


@dataclasses.dataclass(frozen=True)
class Network:
  name: str
  image_size: int
  channels: int
  base_channels: int
  channel_mult: tuple
  num_res_blocks: int
  attention_resolutions: tuple  # pixel sizes with attention (the middle always has one)
  num_heads: int
  dropout: float
  train_batch: int
  sample_batch: int
  train_steps: int  # timed steps per framework
  train_steps_quick: int
  sample_reps: int
  description: str

  @property
  def widths(self) -> tuple:
    return tuple(self.base_channels * m for m in self.channel_mult)


NETWORKS = {
  "tiny": Network(
    "tiny",
    16,
    1,
    32,
    (1, 2, 4),
    2,
    (4,),
    4,
    0.0,
    32,
    64,
    12,
    5,
    3,
    "16x16x1, channels (32, 64, 128), 2 res blocks, attention at 4x4 + middle",
  ),
  "small": Network(
    "small",
    32,
    3,
    64,
    (1, 2, 4, 8),
    2,
    (16,),
    4,
    0.0,
    16,
    16,
    6,
    3,
    2,
    "32x32x3, channels (64, 128, 256, 512), 2 res blocks, attention at 16x16 + middle",
  ),
  "cifar10": Network(
    "cifar10",
    32,
    3,
    128,
    (1, 2, 2, 2),
    2,
    (16,),
    1,
    0.1,
    8,
    4,
    4,
    2,
    2,
    "configs/cifar10.py: DDPM CIFAR-10 network (35.7M), 1 head, dropout 0.1",
  ),
}


def load_config_file(name: str):
  """`configs/<name>.py`'s get_config(), loaded by path (configs/ is not a package)."""
  path = ROOT / "configs" / f"{name}.py"
  spec = importlib.util.spec_from_file_location(f"jaxdiff_bench_config_{name}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def jax_config(net: Network, batch: int, **model_overrides):
  """An ml_collections config for `net` (cifar10: configs/cifar10.py itself)."""
  if net.name == "cifar10":
    config = load_config_file("cifar10")
  else:
    config = load_config_file("default")
    m = config.model
    m.base_channels = net.base_channels
    m.channel_mult = net.channel_mult
    m.num_res_blocks = net.num_res_blocks
    m.attention_resolutions = net.attention_resolutions
    m.num_heads = net.num_heads
    m.dropout = net.dropout
    m.num_classes = 0
    config.data.image_size = net.image_size
    config.data.channels = net.channels
    config.data.num_classes = 0
  config.model.in_channels = net.channels
  config.train.batch_size = batch
  config.optim.warmup_steps = 0
  for k, v in model_overrides.items():
    setattr(config.model, k, v)
  return config


def diffusers_model(net: Network):
  """The same network in diffusers' UNet2DModel layout (additive time conditioning, conv
  down/up sampling, attention at the same resolutions, GroupNorm 32)."""
  from diffusers import UNet2DModel

  sizes = [net.image_size // 2**i for i in range(len(net.channel_mult))]
  down = tuple("AttnDownBlock2D" if s in net.attention_resolutions else "DownBlock2D" for s in sizes)
  up = tuple("AttnUpBlock2D" if s in net.attention_resolutions else "UpBlock2D" for s in reversed(sizes))
  # diffusers' attention_head_dim is channels per head: one value for the whole network.
  head_dim = net.widths[-1] // net.num_heads
  for s, w in zip(sizes, net.widths):
    if s in net.attention_resolutions:
      head_dim = w // net.num_heads
  return UNet2DModel(
    sample_size=net.image_size,
    in_channels=net.channels,
    out_channels=net.channels,
    block_out_channels=net.widths,
    layers_per_block=net.num_res_blocks,
    down_block_types=down,
    up_block_types=up,
    norm_num_groups=32,
    attention_head_dim=head_dim,
    dropout=net.dropout,
  )


# ----------------------------------------------------------------------------------------------
# jaxdiff side


def jax_train(
  net: Network,
  batch: int,
  *,
  steps_per_dispatch: int = 1,
  donate: bool = True,
  model_overrides: dict | None = None,
  config=None,
  compiler_options: dict | None = None,
  multi_step_impl: str = "auto",
):
  """(run_one, info): `run_one()` does `steps_per_dispatch` full train steps (forward, backward,
  Adam, EMA) and blocks until they are done. info holds params, flops per step, compile time,
  XLA's memory analysis. `compiler_options` (XLA debug options for this one executable, e.g.
  ``{"xla_cpu_experimental_ynn_fusion_type": ""}``) lets arms be A/B'd in one process;
  `multi_step_impl` is `make_multi_step`'s loop ("auto" | "unroll" | "scan")."""
  config = config or jax_config(net, batch, **(model_overrides or {}))
  model = create_model(config)
  schedule = schedules.linear(
    config.diffusion.num_timesteps, config.diffusion.beta_start, config.diffusion.beta_end
  )
  state = create_train_state(config, model, jax.random.PRNGKey(0))
  step = make_train_step(config, model, schedule)
  k = max(int(steps_per_dispatch), 1)
  fn = make_multi_step(step, k, multi_step_impl)
  shape = (batch, net.image_size, net.image_size, net.channels)
  x = jax.random.normal(jax.random.PRNGKey(1), ((k,) if k > 1 else ()) + shape, jnp.float32)
  batch_tree = {"x": x}
  key = jax.random.PRNGKey(2)
  jitted = jax.jit(fn, donate_argnums=(0,) if donate else ())
  t0 = time.perf_counter()
  if compiler_options is None:  # what the library itself compiles with
    compiler_options = perf.compiler_options()
  compiled = jitted.lower(state, batch_tree, key).compile(compiler_options=compiler_options or None)
  compile_s = time.perf_counter() - t0
  flops = xla_flops(compiled) / k
  mem = xla_memory(compiled)
  holder = {"state": state}

  def run_one():
    s, metrics = compiled(holder["state"], batch_tree, key)
    jax.block_until_ready(s)
    holder["state"] = s
    return metrics

  info = dict(
    params=count_params(state.params),
    flops_per_step=flops,
    compile_s=compile_s,
    xla_memory=mem,
    images_per_call=batch * k,
    hlo_text=compiled.as_text(),
  )
  return run_one, info


def jax_ddim(
  net: Network,
  batch: int,
  num_steps: int = 50,
  model_overrides: dict | None = None,
  compiler_options: dict | None = None,
):
  """(run_one, info): DDIM-`num_steps` sampling of `batch` images, one compiled lax.scan
  (`compiler_options`: XLA debug options for this executable, as in `jax_train`)."""
  config = jax_config(net, batch, **(model_overrides or {}))
  model = create_model(config)
  schedule = schedules.linear(1000)
  shape = (batch, net.image_size, net.image_size, net.channels)
  params = model.init(
    jax.random.PRNGKey(0), jax.numpy.zeros((1,) + shape[1:]), jax.numpy.zeros((1,), jax.numpy.int32)
  )["params"]
  fn = jaxdiff.bind(model.apply, {"params": params})
  key = jax.random.PRNGKey(3)
  sample = jax.jit(lambda key: jaxdiff.sample(fn, schedule, shape, key, sampler="ddim", num_steps=num_steps))
  t0 = time.perf_counter()
  if compiler_options is None:  # what the library itself compiles with
    compiler_options = perf.compiler_options()
  compiled = sample.lower(key).compile(compiler_options=compiler_options or None)
  jax.block_until_ready(compiled(key))
  first_s = time.perf_counter() - t0

  def run_one():
    jax.block_until_ready(compiled(key))

  return run_one, dict(params=count_params(params), first_call_s=first_s)


def xla_flops(compiled) -> float:
  """FLOPs of a compiled program from XLA's cost analysis (0 when unavailable)."""
  try:
    cost = compiled.cost_analysis()
  except Exception:
    return 0.0
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else {}
  return float((cost or {}).get("flops", 0.0))


def xla_memory(compiled) -> dict:
  try:
    m = compiled.memory_analysis()
  except Exception:
    return {}
  if m is None:
    return {}
  keys = (
    "argument_size_in_bytes",
    "output_size_in_bytes",
    "temp_size_in_bytes",
    "alias_size_in_bytes",
    "generated_code_size_in_bytes",
  )
  return {k: int(getattr(m, k, 0)) for k in keys}


# ----------------------------------------------------------------------------------------------
# diffusers / torch side


def torch_train(net: Network, batch: int, *, grad_clip: float = 1.0, ema_decay: float = 0.9999):
  """(run_one, info): one diffusers train step = q_sample, forward, MSE on eps, backward,
  global-norm clipping (as jaxdiff's default optimizer), Adam, EMA (torch._foreach_lerp_)."""
  import torch
  from torch.utils.flop_counter import FlopCounterMode

  torch.manual_seed(0)
  model = diffusers_model(net).train()
  params = [p for p in model.parameters() if p.requires_grad]
  ema = [p.detach().clone() for p in params]
  opt = torch.optim.Adam(params, lr=2e-4, foreach=True)
  betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
  ac = torch.cumprod(1 - betas, 0).float()
  x0 = torch.randn(batch, net.channels, net.image_size, net.image_size)
  gen = torch.Generator().manual_seed(0)

  def step():
    t = torch.randint(0, 1000, (batch,), generator=gen)
    eps = torch.randn(x0.shape, generator=gen)
    a = ac[t].view(-1, 1, 1, 1)
    xt = a.sqrt() * x0 + (1 - a).sqrt() * eps
    out = model(xt, t).sample
    loss = torch.nn.functional.mse_loss(out, eps)
    loss.backward()
    if grad_clip:
      torch.nn.utils.clip_grad_norm_(params, grad_clip, foreach=True)
    opt.step()
    opt.zero_grad(set_to_none=True)
    with torch.no_grad():
      torch._foreach_lerp_(ema, params, 1.0 - ema_decay)
    return loss

  with FlopCounterMode(display=False) as counter:
    step()
  flops = float(counter.get_total_flops())
  return step, dict(params=sum(p.numel() for p in params), flops_per_step=flops, images_per_call=batch)


def torch_ddim(net: Network, batch: int, num_steps: int = 50):
  """(run_one, info): diffusers DDIMScheduler loop with torch.no_grad, eval mode."""
  import torch
  from diffusers import DDIMScheduler

  torch.manual_seed(0)
  model = diffusers_model(net).eval()
  sched = DDIMScheduler(
    num_train_timesteps=1000, beta_schedule="linear", clip_sample=False, set_alpha_to_one=True, steps_offset=0
  )

  def run_one():
    sched.set_timesteps(num_steps)
    x = torch.randn(
      batch, net.channels, net.image_size, net.image_size, generator=torch.Generator().manual_seed(0)
    )
    with torch.no_grad():
      for t in sched.timesteps:
        eps = model(x, t).sample
        x = sched.step(eps, t, x).prev_sample
    return x

  return run_one, dict(params=sum(p.numel() for p in model.parameters()))


# ----------------------------------------------------------------------------------------------
# Timing


def interleaved(fns: dict[str, Callable[[], Any]], reps: int, warmup: int = 1) -> dict[str, list]:
  """Call each function `warmup` times, then `reps` rounds of A, B, ... (alternating the
  order every round); returns the wall times of each function's timed calls."""
  names = list(fns)
  for _ in range(warmup):
    for n in names:
      fns[n]()
  times = {n: [] for n in names}
  for r in range(reps):
    order = names if r % 2 == 0 else names[::-1]
    for n in order:
      t0 = time.perf_counter()
      fns[n]()
      times[n].append(time.perf_counter() - t0)
  return times


def timed(fn: Callable[..., Any], *args, reps: int, warmup: int = 1) -> float:
  """Median wall time of `fn(*args)` over `reps` calls after `warmup` calls, waiting for JAX
  results (`jax.block_until_ready`) so asynchronous dispatch is not mistaken for speed."""
  for _ in range(warmup):
    jax.block_until_ready(fn(*args))
  ts = []
  for _ in range(reps):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    ts.append(time.perf_counter() - t0)
  return median(ts)


def median(xs) -> float:
  return float(statistics.median(xs)) if xs else float("nan")


def matmul_peak(n: int = 2048, reps: int = 8) -> dict:
  """float32 matmul throughput (GFLOP/s, best of `reps`) of jnp.dot and torch.mm on n x n
  (all cores) and torch.mm on one thread, interleaved; "peak" is the machine's: the best
  all-core figure or cores x the one-thread figure, whichever is higher."""
  import torch

  a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
  ja, jb = jnp.asarray(a), jnp.asarray(a.T.copy())
  dot = jax.jit(jnp.dot)
  dot(ja, jb).block_until_ready()
  ta, tb = torch.from_numpy(a), torch.from_numpy(a.T.copy())
  threads = torch.get_num_threads()

  def mm1():
    torch.set_num_threads(1)
    torch.mm(ta, tb)
    torch.set_num_threads(threads)

  times = interleaved(
    {"jax": lambda: dot(ja, jb).block_until_ready(), "torch": lambda: torch.mm(ta, tb), "torch_1thread": mm1},
    reps,
    warmup=2,
  )
  flops = 2.0 * n**3
  out = {k: flops / min(v) / 1e9 for k, v in times.items()}  # best: peak, not typical
  out["median_jax"] = flops / median(times["jax"]) / 1e9
  out["median_torch"] = flops / median(times["torch"]) / 1e9
  # The machine's peak: the best all-core figure, and never below twice one core's (on a
  # shared machine the all-core matmul is the first victim of the other load).
  out["peak"] = max(out["jax"], out["torch"], (os.cpu_count() or 1) * out["torch_1thread"])
  return out


# ----------------------------------------------------------------------------------------------
# Environment and results


def load_average() -> str:
  try:
    return open("/proc/loadavg").read().split()[:3].__str__()
  except OSError:
    return "?"


def environment() -> dict:
  env = dict(
    date=datetime.datetime.now().isoformat(timespec="seconds"),
    host=platform.node(),
    python=platform.python_version(),
    jax=jax.__version__,
    jaxlib=jaxlib.__version__,
    cpu=_cpu_model(),
    cores=os.cpu_count(),
    loadavg=load_average(),
    xla_flags=os.environ.get("XLA_FLAGS", ""),
    glibc_tunables=os.environ.get("GLIBC_TUNABLES", ""),
  )
  try:
    import diffusers
    import torch

    env.update(
      flax=flax.__version__,
      torch=torch.__version__,
      diffusers=diffusers.__version__,
      torch_threads=torch.get_num_threads(),
    )
  except ImportError:
    pass
  return env


def _cpu_model() -> str:
  try:
    out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    for line in out.splitlines():
      if line.startswith("Model name:"):
        return line.split(":", 1)[1].strip()
  except Exception:
    pass
  return platform.processor()


def append_result(kind: str, record: dict) -> pathlib.Path:
  """Append one JSON line to benchmarks/results/<kind>.jsonl (or $JAXDIFF_BENCH_RESULTS)."""
  RESULTS.mkdir(parents=True, exist_ok=True)
  path = RESULTS / f"{kind}.jsonl"
  with open(path, "a") as f:
    f.write(json.dumps(record, default=float) + "\n")
  return path


def finish_row(kind: str, rec: dict, header: list[str], row: list[Any], rows: list[list[Any]]) -> None:
  """Store one network's record (with the load after it ran) and print its row as it is done."""
  rows.append(row)
  rec["loadavg_after"] = load_average()
  append_result(kind, rec)
  print_table(header, [row])
  print()


def print_summary(header: list[str], rows: list[list[Any]]) -> None:
  print(f"# summary  (load after: {load_average()})")
  print_table(header, rows)


def print_table(header: list[str], rows: list[list[Any]]) -> None:
  cells = [[_fmt(c) for c in r] for r in [header] + rows]
  widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
  for j, r in enumerate(cells):
    print(" | ".join(c.rjust(w) for c, w in zip(r, widths)))
    if j == 0:
      print("-+-".join("-" * w for w in widths))
  sys.stdout.flush()


def _fmt(c: Any) -> str:
  if isinstance(c, float):
    if c != c:
      return "-"
    return f"{c:.3g}" if abs(c) < 100 else f"{c:.0f}"
  return str(c)
