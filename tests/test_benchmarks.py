"""Smoke checks that the benchmark tooling still runs on this jax (tiny shapes, results redirected
to a temporary directory): the scan-vs-top-level convolution check and the profiler-trace reader
behind profile_step.py. Speed itself is never asserted here (BENCHMARKS.md holds the figures)."""

import json
import os
import pathlib
import subprocess
import sys
import tempfile

import jax
import jax.numpy as jnp
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"


def test_bench_scan_conv_runs_and_records(tmp_path):
  env = {**os.environ, "JAXDIFF_BENCH_RESULTS": str(tmp_path), "PYTHONPATH": str(ROOT)}
  out = subprocess.run(
    [
      sys.executable,
      str(BENCH / "bench_scan_conv.py"),
      "--shape=2x4x8",
      "--length=2",
      "--reps=1",
      "--tag=smoke",
    ],
    env=env,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert out.returncode == 0, out.stderr[-2000:]
  recs = [json.loads(line) for line in open(tmp_path / "scan_conv.jsonl")]
  assert [r["part"] for r in recs] == ["forward", "input gradient (dx)", "kernel gradient (dw)"]
  assert all(r["top_level_s"] > 0 and r["scan_s"] > 0 and r["tag"] == "smoke" for r in recs)
  assert "scan slowdown" in out.stdout
  assert not (BENCH / "results" / "scan_conv.jsonl").exists() or all(
    json.loads(line).get("tag") != "smoke" for line in open(BENCH / "results" / "scan_conv.jsonl")
  )


def test_profile_trace_reader_sees_the_compiled_ops():
  pytest.importorskip("tensorflow.tsl.profiler.protobuf.xplane_pb2")
  sys.path.insert(0, str(BENCH))
  try:
    import profile_step
  finally:
    sys.path.remove(str(BENCH))

  def f(x, w):
    y = jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return jnp.tanh(y).sum(axis=(1, 2))

  x, w = jnp.ones((2, 8, 8, 4)), jnp.ones((3, 3, 4, 4))
  compiled = jax.jit(f).lower(x, w).compile()
  jax.block_until_ready(compiled(x, w))
  with tempfile.TemporaryDirectory() as d:
    with jax.profiler.trace(d):
      jax.block_until_ready(compiled(x, w))
    totals = profile_step.read_op_times(d)
  traced = {name for (_, _, name) in totals}
  hlo = compiled.as_text()
  phases = profile_step.phases_of(hlo)
  # Every op the profiler names exists in the optimized HLO, and the convolution is among them.
  ops = {n for n in traced if n in phases}
  assert ops, sorted(traced)[:20]
  assert any("conv" in n or "ynn" in n for n in ops), sorted(ops)
  assert profile_step.kind_of("ynn_fusion.3") == "ynn fusion (conv/dot)"
  assert profile_step.kind_of("transpose_copy_fusion.1") == "copy / transpose"


def test_accelerator_dry_run_on_cpu(tmp_path):
  """benchmarks/accelerator.py --dry-run: every section runs at tiny sizes on the CPU (two
  host devices, so the sharding check runs), records JSON lines and prints the summary."""
  env = {
    **os.environ,
    "JAXDIFF_BENCH_RESULTS": str(tmp_path),
    "PYTHONPATH": str(ROOT),
    "JAX_PLATFORMS": "cpu",
    "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
  }
  out = subprocess.run(
    [sys.executable, str(BENCH / "accelerator.py"), "--dry-run", "--tag=smoke"],
    env=env,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
  recs = [json.loads(line) for line in open(tmp_path / "accelerator.jsonl")]
  checks = {r["name"]: r for r in recs if r["section"] == "checks"}
  assert checks["bf16 compute"]["ok"] and 0 < checks["bf16 compute"]["rel_diff_vs_f32"] < 0.1
  assert checks["attention auto"]["ok"] and checks["attention auto"]["kernel"] == "xla"  # no cuDNN on CPU
  assert checks["sharding"]["ok"] and checks["sharding"]["devices"] == 2
  (unet,) = [r for r in recs if r["section"] == "unet"]
  assert unet["images_per_s"] > 0 and unet["flops_per_step"] > 0 and unet["mfu"] is None
  assert unet["dtype"] == "bfloat16" and 0 < unet["loss"] < 10  # a finite bf16 train step
  assert unet["env"]["platform"] == "cpu" and unet["dry_run"] and unet["tag"] == "smoke"
  dit = [r for r in recs if r["section"] == "dit"]
  assert dit and all("images_per_s" in r or r.get("skipped") for r in dit)
  (ddim,) = [r for r in recs if r["section"] == "ddim"]
  assert ddim["finite"] and ddim["images_per_s"] > 0
  assert "| model | dtype | batch |" in out.stdout


def test_accelerator_peak_table():
  sys.path.insert(0, str(BENCH))
  try:
    import accelerator
  finally:
    sys.path.remove(str(BENCH))
  peak = accelerator.peak_bf16_tflops
  assert peak("NVIDIA H100 80GB HBM3") == 989 and peak("NVIDIA H200") == 989
  assert peak("NVIDIA H100 PCIe") == 756 and peak("NVIDIA A100-SXM4-80GB") == 312
  assert peak("NVIDIA H20") == 148
  assert peak("TPU v4") == 275 and peak("TPU v5 lite") == 197 and peak("TPU v5") == 459
  assert peak("TPU v6 lite") == 918 and peak("cpu") is None


def test_accelerator_sh_checks_its_packages_and_starts(tmp_path):
  """benchmarks/accelerator.sh: installs only ./wheels (if any), checks the imports it needs and
  hands its arguments to accelerator.py (here --help: no measurement)."""
  out = subprocess.run(
    ["bash", str(BENCH / "accelerator.sh"), "--help"],
    env={**os.environ, "PYTHON": sys.executable, "JAX_PLATFORMS": "cpu", "TMPDIR": str(tmp_path)},
    capture_output=True,
    text=True,
    timeout=120,
  )
  assert out.returncode == 0, out.stderr[-2000:]
  assert "# devices:" in out.stdout and "--dry-run" in out.stdout
