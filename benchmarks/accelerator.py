"""One accelerator check: the GPU-sensitive behaviour and the throughput of jaxdiff on
the chip it runs on, in at most ~10 minutes, with nothing fetched from the network.

    bash benchmarks/accelerator.sh                 # on a GPU / TPU machine (installs wheels/ first)
    python benchmarks/accelerator.py               # the same without the wheel step
    python benchmarks/accelerator.py --dry-run     # CPU, tiny sizes, seconds (tests/test_benchmarks.py)

Sections, each with its own time budget (a section that would start past the overall budget is
skipped and says so):

* ``checks``: bf16 compute (the UNet in bfloat16 against float32 on the device, one bf16 train
  step), cuDNN attention through ``attention_impl="auto"`` (is the fused kernel in the compiled
  program, does it match XLA's attention), sharding over the devices present (a train step on
  all devices equals the one-device step), and the repository's bf16/attention tests under pytest
  on the accelerator (when pytest is installed).
* ``unet``: training images/s of ``configs/cifar10.py``'s UNet (35.7M) in bf16 compute at batch
  sizes that fill the chip, achieved TFLOP/s and model-FLOPs utilisation (MFU) against the
  chip's dense bf16 peak (``PEAK_BF16_TFLOPS``), compile time.
* ``dit``: the same for DiT-B/2 (``config.model.name="dit"``, ``dit_variant="B/2"``) on 32x32x4
  latents, when jaxdiff has a DiT; skipped with the reason otherwise.
* ``ddim``: DDIM-50 sampling throughput of the cifar10 UNet (one compiled ``lax.scan``), compile time.

FLOPs per step come from XLA's cost analysis of the lowered program (``Lowered.cost_analysis()``,
the model's math as written: convolutions, matmuls and the element-wise work), and of the
compiled program where the backend reports it; MFU = FLOPs per step / step time / peak. Every
figure is appended as a JSON line to ``benchmarks/results/accelerator.jsonl`` (or
``$JAXDIFF_BENCH_RESULTS``); a markdown summary is printed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
import traceback
from collections.abc import Callable

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import jaxdiff  # noqa: E402
from jaxdiff import parallel, perf, schedules  # noqa: E402
from jaxdiff.models import count_params, create_model  # noqa: E402
from jaxdiff.models.attention import MultiHeadAttention  # noqa: E402
from jaxdiff.training import create_train_state, make_train_step  # noqa: E402

# Dense (no sparsity) bf16 peak TFLOP/s by device kind, first matching pattern wins (vendor data
# sheets; jax's `device_kind` strings, e.g. "NVIDIA H100 80GB HBM3", "TPU v5 lite").
PEAK_BF16_TFLOPS: list[tuple[str, float]] = [
  (r"H100.*PCIe", 756.0),
  (r"H100.*NVL", 835.0),
  (r"GH200|H200|H100", 989.0),  # SXM
  (r"B200", 2250.0),
  (r"\bH20\b", 148.0),
  (r"A100", 312.0),
  (r"L40S", 362.0),
  (r"\bL4\b", 121.0),
  (r"A10G|\bA10\b", 125.0),
  (r"TPU v6", 918.0),  # v6e ("TPU v6 lite")
  (r"TPU v5 lite|TPU v5e", 197.0),
  (r"TPU v5", 459.0),  # v5p
  (r"TPU v4", 275.0),
  (r"TPU v3", 123.0),
  (r"TPU v2", 45.0),
]

# Seconds each section may take (the whole run stays under --budget, 570 s by default).
SECTION_BUDGET = {"checks": 120, "unet": 210, "dit": 120, "ddim": 90}


def peak_bf16_tflops(device_kind: str) -> float | None:
  """The chip's dense bf16 peak in TFLOP/s, or None when unknown (CPUs)."""
  for pattern, peak in PEAK_BF16_TFLOPS:
    if re.search(pattern, device_kind, flags=re.IGNORECASE):
      return peak
  return None


class Budget:
  """Wall-clock budget of the whole run and of each section."""

  def __init__(self, total: float):
    self.t0 = time.perf_counter()
    self.total = total

  def elapsed(self) -> float:
    return time.perf_counter() - self.t0

  def left(self) -> float:
    return self.total - self.elapsed()


# ----------------------------------------------------------------------------------------------
# Configs


def unet_config(dry: bool, batch: int):
  """configs/cifar10.py in bf16 compute (float32 parameters); a tiny UNet for --dry-run."""
  config = common.load_config_file("cifar10")
  if dry:
    m = config.model
    m.base_channels, m.channel_mult, m.num_res_blocks = 8, (1, 2), 1
    m.attention_resolutions, m.num_groups, m.num_heads = (4,), 4, 1
    config.data.image_size, config.data.channels, m.in_channels = 8, 1, 1
  config.model.dtype = "bfloat16"
  config.train.batch_size = batch
  config.optim.warmup_steps = 0
  return config


def dit_config(dry: bool, batch: int):
  """DiT-B/2 on 32x32x4 latents, class-conditional (1000 classes), bf16 compute (--dry-run: a
  2-block, 32-wide DiT on 8x8x4). Raises when jaxdiff has no DiT (config validation or model
  creation fails)."""
  config = common.load_config_file("default")
  m = config.model
  m.name = "dit"
  if dry:
    m.dit_variant, m.hidden_size, m.depth, m.num_heads, m.patch_size = "", 32, 2, 2, 2
  else:
    m.dit_variant = "B/2"
  config.data.image_size = 8 if dry else 32
  config.data.channels = m.in_channels = 4
  config.data.num_classes = m.num_classes = 10 if dry else 1000
  m.dtype = "bfloat16"
  config.train.batch_size = batch
  config.optim.warmup_steps = 0
  return config


# ----------------------------------------------------------------------------------------------
# Measurements


def _flops(stage) -> float:
  try:
    cost = stage.cost_analysis()
  except Exception:
    return 0.0
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else {}
  return float((cost or {}).get("flops", 0.0))


def _is_oom(e: Exception) -> bool:
  return "RESOURCE_EXHAUSTED" in str(e) or "out of memory" in str(e).lower()


def measure_train(config, dry: bool, seconds: float, peak: float | None) -> dict:
  """Compile the library's train step for one device (state donated) and time it: the record of
  one (model, batch) row."""
  model = create_model(config)
  schedule = schedules.linear(config.diffusion.num_timesteps)
  state = create_train_state(config, model, jax.random.key(0))
  batch = int(config.train.batch_size)
  size, ch = int(config.data.image_size), int(config.model.in_channels)
  x = {"x": jax.random.normal(jax.random.key(1), (batch, size, size, ch), jnp.float32)}
  if int(config.model.num_classes) > 0:
    x["label"] = jnp.arange(batch, dtype=jnp.int32) % int(config.model.num_classes)
  key = jax.random.key(2)
  jitted = jax.jit(
    make_train_step(config, model, schedule), donate_argnums=(0,), compiler_options=perf.compiler_options()
  )
  t0 = time.perf_counter()
  lowered = jitted.lower(state, x, key)
  t1 = time.perf_counter()
  compiled = lowered.compile()
  t2 = time.perf_counter()
  flops = _flops(lowered)
  flops_compiled = _flops(compiled)
  state, metrics = compiled(state, x, key)  # warm-up (first execution)
  jax.block_until_ready(state)
  t3 = time.perf_counter()
  # Steps dispatched back to back, one sync at the end (as the training loop runs them).
  steps, elapsed = 0, 0.0
  chunk = 2 if dry else 5
  while elapsed < seconds or steps < (2 if dry else 10):
    a = time.perf_counter()
    for _ in range(chunk):
      state, metrics = compiled(state, x, key)
    jax.block_until_ready(state)
    elapsed += time.perf_counter() - a
    steps += chunk
    if dry and steps >= 2:
      break
  step_s = elapsed / steps
  tflops = flops / step_s / 1e12
  return dict(
    params=count_params(state.params),
    batch=batch,
    dtype=str(config.model.dtype),
    lower_s=t1 - t0,
    compile_s=t2 - t1,
    first_step_s=t3 - t2,
    steps_timed=steps,
    step_s=step_s,
    images_per_s=batch / step_s,
    flops_per_step=flops,
    flops_per_step_compiled=flops_compiled,
    tflops=tflops,
    mfu=(tflops / peak) if peak else None,
    loss=float(metrics["loss"]),
    xla_memory=common.xla_memory(compiled),
  )


def measure_ddim(config, batch: int, num_steps: int, reps: int) -> dict:
  """DDIM-`num_steps` of `batch` images with the config's network (random weights), one
  compiled lax.scan: compile time and images/s."""
  model = create_model(config)
  size, ch = int(config.data.image_size), int(config.model.in_channels)
  shape = (batch, size, size, ch)
  params = model.init(jax.random.key(0), jnp.zeros((1,) + shape[1:]), jnp.zeros((1,), jnp.int32))["params"]
  schedule = schedules.linear(1000)
  run = jax.jit(
    lambda p, key: jaxdiff.sample(
      jaxdiff.bind(model.apply, {"params": p}), schedule, shape, key, sampler="ddim", num_steps=num_steps
    ),
    compiler_options=perf.compiler_options(),
  )
  key = jax.random.key(3)
  t0 = time.perf_counter()
  compiled = run.lower(params, key).compile()
  t1 = time.perf_counter()
  jax.block_until_ready(compiled(params, key))
  times = []
  for _ in range(reps):
    a = time.perf_counter()
    out = compiled(params, key)
    jax.block_until_ready(out)
    times.append(time.perf_counter() - a)
  wall = float(np.median(times))
  return dict(
    batch=batch,
    num_steps=num_steps,
    dtype=str(config.model.dtype),
    compile_s=t1 - t0,
    wall_s=wall,
    images_per_s=batch / wall,
    finite=bool(np.all(np.isfinite(np.asarray(out)))),
  )


# ----------------------------------------------------------------------------------------------
# Checks


def check_bf16(dry: bool) -> dict:
  """The UNet in bf16 compute vs float32 (same parameters) on the default device: float32 output,
  the same function up to bf16 rounding; and a bf16 train step with a finite loss."""
  config = unet_config(True, 4)  # a small network: behaviour, not speed
  if not dry:
    config.model.base_channels, config.data.image_size = 32, 16
  config.model.dtype = "float32"
  f32 = create_model(config)
  config.model.dtype = "bfloat16"
  bf16 = create_model(config)
  size, ch = int(config.data.image_size), int(config.model.in_channels)
  x = jax.random.normal(jax.random.key(0), (4, size, size, ch))
  t = jnp.array([1, 100, 500, 999], jnp.int32)
  params = f32.init(jax.random.key(1), x, t)["params"]
  # non-zero output layer so every layer shows in the output
  params = jax.tree_util.tree_map(lambda p: p + 0.02 * jnp.cos(jnp.arange(p.size).reshape(p.shape)), params)
  out32 = jax.jit(lambda p: f32.apply({"params": p}, x, t))(params)
  out16 = jax.jit(lambda p: bf16.apply({"params": p}, x, t))(params)
  rel = float(jnp.linalg.norm(out16 - out32) / jnp.linalg.norm(out32))
  # one bf16 train step (the dry run leaves it to the unet section, which checks its loss too)
  loss = float("nan") if dry else measure_train(config, True, 0.0, None)["loss"]
  ok = out16.dtype == jnp.float32 and 0.0 < rel < 0.1 and (dry or np.isfinite(loss))
  return dict(name="bf16 compute", ok=bool(ok), rel_diff_vs_f32=rel, train_loss=loss)


def check_attention() -> dict:
  """attention_impl="auto" in bf16: which kernel the compiled program holds (cuDNN's fused
  attention custom call on GPU) and its agreement with XLA's attention."""
  b, length, c = 4, 256, 128
  q = jax.random.normal(jax.random.key(0), (b, length, c), jnp.bfloat16)
  mods = {
    impl: MultiHeadAttention(c, num_heads=2, implementation=impl, dtype=jnp.bfloat16, zero_init_out=False)
    for impl in ("auto", "xla")
  }
  params = mods["xla"].init(jax.random.key(1), q)["params"]
  outs, kernel = {}, "xla"
  for impl, mod in mods.items():
    fn = jax.jit(lambda p, x, mod=mod: mod.apply({"params": p}, x))
    text = fn.lower(params, q).compile().as_text() or ""
    if impl == "auto" and re.search(r"cudnn\$fmha|__cudnn\$fusion|fmha|flash", text):
      kernel = "cudnn"
    outs[impl] = np.asarray(fn(params, q), np.float32)
  diff = float(np.max(np.abs(outs["auto"] - outs["xla"])))
  scale = float(np.max(np.abs(outs["xla"])))
  on_gpu = jax.default_backend() == "gpu"
  ok = diff <= 0.05 * max(scale, 1.0) and (kernel == "cudnn" or not on_gpu)
  return dict(name="attention auto", ok=bool(ok), kernel=kernel, max_abs_diff=diff, scale=scale)


def check_sharding() -> dict:
  """A few train steps with the batch split over every device equal the one-device steps."""
  n = jax.device_count()
  if n < 2:
    return dict(name="sharding", ok=None, skipped=f"{n} device")
  config = unet_config(True, 4 * n)
  config.model.dtype = "float32"
  model = create_model(config)
  schedule = schedules.linear(config.diffusion.num_timesteps)
  size, ch = int(config.data.image_size), int(config.model.in_channels)
  rng = np.random.default_rng(0)
  batches = [{"x": rng.standard_normal((4 * n, size, size, ch)).astype(np.float32)} for _ in range(3)]
  out = {}
  for name, devs in (("one", jax.devices()[:1]), ("all", jax.devices())):
    mesh = parallel.create_mesh(devs)
    repl, data = parallel.replicated(mesh), parallel.data_sharding(mesh)
    state = jax.jit(lambda k: create_train_state(config, model, k), out_shardings=repl)(jax.random.key(0))
    step = jax.jit(
      make_train_step(config, model, schedule),
      in_shardings=(repl, data, repl),
      out_shardings=(repl, repl),
      donate_argnums=(0,),
    )
    key = jax.device_put(jax.random.key(1), repl)
    for b in batches:
      state, m = step(state, parallel.to_global(b, data), key)
    out[name] = [np.asarray(a) for a in jax.tree_util.tree_leaves(jax.device_get(state.params))]
  diff = max(float(np.max(np.abs(a - b))) for a, b in zip(out["one"], out["all"]))
  scale = max(float(np.max(np.abs(a))) for a in out["one"])
  # float32 with TF32 matmuls / different reduction order over devices: agreement, not equality
  tol = 1e-5 if jax.default_backend() == "cpu" else 2e-3
  return dict(
    name="sharding", ok=bool(diff <= tol * max(scale, 1.0)), devices=n, max_abs_diff=diff, scale=scale
  )


def run_pytest(timeout: float) -> dict:
  """The repository's bf16 / attention tests on this accelerator (pytest's conftest would pick
  the CPU: JAX_PLATFORMS is set to '' so that JAX takes the accelerator)."""
  try:
    import pytest  # noqa: F401
  except ImportError:
    return dict(name="pytest", ok=None, skipped="pytest not installed")
  cmd = [
    sys.executable,
    "-m",
    "pytest",
    "-q",
    "-x",
    "-p",
    "no:cacheprovider",
    "tests/test_models.py",
    "-k",
    "bfloat16 or attention or cudnn",
  ]
  env = {**os.environ, "JAX_PLATFORMS": ""}
  try:
    r = subprocess.run(
      cmd, cwd=common.ROOT, env=env, capture_output=True, text=True, timeout=max(timeout, 10)
    )
  except subprocess.TimeoutExpired:
    return dict(name="pytest", ok=None, skipped=f"timed out after {timeout:.0f} s")
  tail = (r.stdout + r.stderr).strip().splitlines()[-1:] or [""]
  return dict(name="pytest", ok=r.returncode == 0, summary=tail[0], command=" ".join(cmd[2:]))


# ----------------------------------------------------------------------------------------------
# Sections


def section_checks(args, budget: Budget, env: dict) -> list[dict]:
  recs = []
  for name, fn in (
    ("bf16 compute", lambda: check_bf16(args.dry_run)),
    ("attention auto", check_attention),
    ("sharding", check_sharding),
  ):
    recs.append(_guard(name, fn))
  if args.pytest and not args.dry_run:
    recs.append(_guard("pytest", lambda: run_pytest(max(10.0, min(90.0, budget.left() - 300)))))
  return [dict(section="checks", **r) for r in recs]


def _batches(args, default: list[int]) -> list[int]:
  if args.dry_run:
    return [2]
  if args.batches:
    return [int(b) for b in args.batches.split(",")]
  return default


def section_train(args, budget: Budget, env: dict, which: str) -> list[dict]:
  peak = env["peak_bf16_tflops"]
  make = unet_config if which == "unet" else dit_config
  default = [256, 512, 128] if which == "unet" else [256, 512]  # the likely best first
  recs = []
  t_section = time.perf_counter()
  for batch in _batches(args, default):
    spent = time.perf_counter() - t_section
    if spent > SECTION_BUDGET[which] * 0.6 or budget.left() < 60:
      recs.append(dict(section=which, batch=batch, skipped=f"budget ({spent:.0f} s spent in the section)"))
      break
    try:
      config = make(args.dry_run, batch)
    except Exception as e:  # no DiT in this jaxdiff: say why and go on
      return [dict(section=which, skipped=f"{type(e).__name__}: {e}"[:300])]
    try:
      rec = measure_train(config, args.dry_run, args.seconds, peak)
    except Exception as e:
      if _is_oom(e):
        recs.append(dict(section=which, batch=batch, skipped="out of memory"))
        break
      if which == "dit" and not recs:
        return [dict(section=which, skipped=f"{type(e).__name__}: {e}"[:300])]
      recs.append(dict(section=which, batch=batch, error=f"{type(e).__name__}: {e}"[:500]))
      break
    recs.append(dict(section=which, model="cifar10 UNet" if which == "unet" else "DiT-B/2", **rec))
  return recs


def section_ddim(args, budget: Budget, env: dict) -> list[dict]:
  batch = 2 if args.dry_run else (int(args.ddim_batch) or 512)
  steps = 3 if args.dry_run else 50
  config = unet_config(args.dry_run, batch)
  try:
    rec = measure_ddim(config, batch, steps, 1 if args.dry_run else 3)
  except Exception as e:
    return [dict(section="ddim", batch=batch, error=f"{type(e).__name__}: {e}"[:500])]
  return [dict(section="ddim", model="cifar10 UNet", **rec)]


def _guard(name: str, fn: Callable[[], dict]) -> dict:
  try:
    return fn()
  except Exception as e:
    return dict(
      name=name, ok=False, error=f"{type(e).__name__}: {e}"[:500], trace=traceback.format_exc()[-1500:]
    )


def environment() -> dict:
  dev = jax.devices()[0]
  kind = getattr(dev, "device_kind", "") or ""
  env = dict(
    date=time.strftime("%Y-%m-%dT%H:%M:%S"),
    platform=dev.platform,
    device_kind=kind,
    device_count=jax.device_count(),
    jax=jax.__version__,
    python=sys.version.split()[0],
    peak_bf16_tflops=peak_bf16_tflops(kind) if dev.platform != "cpu" else None,
    host=os.uname().nodename,
  )
  return env


def summary_markdown(env: dict, recs: list[dict]) -> str:
  lines = [
    f"### Accelerator check: {env['device_kind'] or env['platform']} x{env['device_count']}, jax {env['jax']}, "
    f"{env['date']} (bf16 peak {env['peak_bf16_tflops'] or '?'} TFLOP/s)",
    "",
    "| check | result | detail |",
    "|---|---|---|",
  ]
  for r in recs:
    if r["section"] != "checks":
      continue
    res = "skipped" if r.get("ok") is None else ("pass" if r["ok"] else "**FAIL**")
    detail = {k: v for k, v in r.items() if k not in ("section", "name", "ok", "trace", "env", "tag")}
    lines.append(f"| {r.get('name', '?')} | {res} | {json.dumps(detail, default=str)[:200]} |")
  lines += [
    "",
    "| model | dtype | batch | compile s | step ms | images/s | TFLOP/s | MFU |",
    "|---|---|---|---|---|---|---|---|",
  ]
  for r in recs:
    if r["section"] not in ("unet", "dit"):
      continue
    if "step_s" not in r:
      lines.append(
        f"| {r['section']} | | {r.get('batch', '')} | | | {r.get('skipped') or r.get('error')} | | |"
      )
      continue
    mfu = f"{100 * r['mfu']:.1f} %" if r.get("mfu") is not None else "-"
    lines.append(
      f"| {r['model']} ({r['params'] / 1e6:.1f}M) | {r['dtype']} | {r['batch']} | {r['compile_s']:.1f} | "
      f"{1e3 * r['step_s']:.1f} | {r['images_per_s']:.0f} | {r['tflops']:.1f} | {mfu} |"
    )
  for r in recs:
    if r["section"] == "ddim":
      if "wall_s" in r:
        lines.append(
          f"\nDDIM-{r['num_steps']} ({r['model']}, {r['dtype']}, batch {r['batch']}): {r['wall_s']:.2f} s, "
          f"{r['images_per_s']:.0f} images/s, compile {r['compile_s']:.1f} s"
        )
      else:
        lines.append(f"\nDDIM: {r.get('error') or r.get('skipped')}")
  return "\n".join(lines)


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--dry-run", action="store_true", help="CPU-sized run in seconds (tests)")
  p.add_argument("--sections", default="checks,unet,dit,ddim")
  p.add_argument("--budget", type=float, default=570.0, help="seconds for the whole run")
  p.add_argument("--seconds", type=float, default=8.0, help="timed seconds per training row")
  p.add_argument(
    "--batches", default="", help="training batch sizes (default: 256,512,128 UNet; 256,512 DiT)"
  )
  p.add_argument("--ddim-batch", default="0")
  p.add_argument("--no-pytest", dest="pytest", action="store_false", help="skip the pytest subset")
  p.add_argument("--tag", default="")
  args = p.parse_args(argv)
  budget = Budget(args.budget)
  if args.dry_run:
    jax.config.update("jax_disable_most_optimizations", True)  # behaviour, not speed
  env = environment()
  print(f"# accelerator check: {json.dumps(env)}", flush=True)
  runners = {
    "checks": lambda: section_checks(args, budget, env),
    "unet": lambda: section_train(args, budget, env, "unet"),
    "dit": lambda: section_train(args, budget, env, "dit"),
    "ddim": lambda: section_ddim(args, budget, env),
  }
  recs: list[dict] = []
  for name in [s for s in args.sections.split(",") if s]:
    if budget.left() < min(SECTION_BUDGET[name], 45):
      recs.append(dict(section=name, skipped=f"overall budget ({budget.elapsed():.0f} s used)"))
      continue
    t0 = time.perf_counter()
    out = runners[name]()
    for r in out:
      r.update(env=env, tag=args.tag, dry_run=args.dry_run, section_s=time.perf_counter() - t0)
      common.append_result("accelerator", r)
      printable = {k: v for k, v in r.items() if k not in ("env", "trace", "xla_memory")}
      print(json.dumps(printable, default=str), flush=True)
    recs += out
  print()
  print(summary_markdown(env, recs))
  print(f"\n# total {budget.elapsed():.0f} s; results appended to {common.RESULTS / 'accelerator.jsonl'}")
  failed = [r for r in recs if r["section"] == "checks" and r.get("ok") is False]
  return 1 if failed else 0


if __name__ == "__main__":
  sys.exit(main())
