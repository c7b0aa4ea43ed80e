"""`python -m jaxdiff.info WORKDIR`: what a workdir holds, read-only, checked against the files."""

import json
import os
import shutil
import subprocess
import sys

import pytest
from helpers import ROOT, tiny_points_config

from jaxdiff.info import format_info, workdir_info

SHARD = 4


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  """A tiny MLP trained for 10 steps by the real loop (checkpoint 10 with its checksums, metrics.jsonl)
  and a sample folder of 8 samples in workdir/generated."""
  from jaxdiff.bulk import generate
  from jaxdiff.training import train

  wd = str(tmp_path_factory.mktemp("info") / "run")
  train(tiny_points_config(num_steps=10), wd)
  generate(wd, num_samples=8, shard_size=SHARD, progress=False)
  return wd


def _env():
  return {**os.environ, "JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": ROOT}


def _snapshot(folder):
  return {
    os.path.join(r, f): (os.path.getsize(os.path.join(r, f)), os.path.getmtime(os.path.join(r, f)))
    for r, _, files in os.walk(folder)
    for f in files
  }


def _last_metrics_line(wd):
  with open(os.path.join(wd, "metrics.jsonl")) as f:
    return json.loads(f.read().strip().splitlines()[-1])


def test_info_reports_config_checkpoints_samples_and_metrics(workdir):
  before = _snapshot(workdir)
  info = workdir_info(workdir)
  assert _snapshot(workdir) == before  # read-only
  c = info["config"]
  assert c["data"] == {"name": "toy2d/s_curve", "shape": [2], "kind": "points", "num_classes": 0}
  assert c["process"]["name"] == "vp" and c["process"]["num_timesteps"] == 1000
  assert c["model"]["name"] == "mlp" and c["training"]["num_steps"] == 10
  steps = info["checkpoints"]["steps"]
  assert [s["step"] for s in steps] == sorted(
    int(n) for n in os.listdir(os.path.join(workdir, "checkpoints")) if n.isdigit()
  )
  assert steps[-1]["step"] == 10 and steps[-1]["status"] == "verified" and steps[-1]["bytes"] > 0
  (run,) = info["samples"]
  assert run["folder"] == os.path.join(workdir, "generated")
  assert (run["method"], run["num_samples"], run["shards_present"], run["shards"]) == ("ddim-10", 8, 2, 2)
  assert run["checkpoint_step"] == 10 and run["invocations"] == 1 and not run["being_written"]
  assert info["metrics"] == _last_metrics_line(workdir)
  text = format_info(info)
  assert "step       10" in text and "verified" in text and "generated: ddim-10, seed 0" in text


def test_info_tells_damaged_and_unverified_steps(workdir, tmp_path):
  wd = str(tmp_path / "copy")
  shutil.copytree(workdir, wd)
  step = os.path.join(wd, "checkpoints", "10")
  files = sorted(
    os.path.join(r, f)
    for r, _, fs in os.walk(step)
    for f in fs
    if f != "jaxdiff_checksums.json" and os.path.getsize(os.path.join(r, f)) > 8
  )
  with open(files[0], "r+b") as f:  # one flipped byte: bit rot
    b = f.read(1)
    f.seek(0)
    f.write(bytes([b[0] ^ 0xFF]))
  status = workdir_info(wd)["checkpoints"]["steps"][-1]["status"]
  assert status.startswith("damaged:") and "checksum mismatch in " + os.path.relpath(files[0], step) in status
  os.remove(os.path.join(step, "jaxdiff_checksums.json"))
  assert workdir_info(wd)["checkpoints"]["steps"][-1]["status"] == "unverified (no checksum manifest)"


def test_info_command_prints_and_refuses_a_non_workdir_in_one_line(workdir, tmp_path):
  r = subprocess.run(
    [sys.executable, "-m", "jaxdiff.info", workdir], env=_env(), capture_output=True, text=True, timeout=240
  )
  assert r.returncode == 0, r.stderr[-3000:]
  assert r.stdout.startswith(f"workdir {workdir}") and "checkpoints" in r.stdout
  r = subprocess.run(
    [sys.executable, "-m", "jaxdiff.info", workdir, "--json"],
    env=_env(),
    capture_output=True,
    text=True,
    timeout=240,
  )
  assert json.loads(r.stdout)["checkpoints"]["steps"][-1]["status"] == "verified"
  r = subprocess.run(
    [sys.executable, "-m", "jaxdiff.info", str(tmp_path)],
    env=_env(),
    capture_output=True,
    text=True,
    timeout=240,
  )
  assert r.returncode == 2 and "Traceback" not in r.stderr
  assert len(r.stderr.strip().splitlines()) == 1 and "not a jaxdiff training workdir" in r.stderr
  assert os.listdir(tmp_path) == []


def _console_scripts() -> dict[str, str]:
  import tomllib

  with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
    return tomllib.load(f)["project"]["scripts"]


def test_console_scripts_cover_every_command():
  scripts = _console_scripts()
  for name in (
    "jaxdiff-train",
    "jaxdiff-sample",
    "jaxdiff-evaluate",
    "jaxdiff-likelihood",
    "jaxdiff-interop",
    "jaxdiff-info",
  ):
    assert name in scripts, name
  assert (
    scripts["jaxdiff-train"] == "jaxdiff.training.cli:run"
    and scripts["jaxdiff-sample"] == "jaxdiff.bulk.cli:run"
  )


@pytest.mark.parametrize("name", sorted(_console_scripts()))
def test_each_console_script_starts_its_command(name):
  """Each entry point as the installed script calls it (`sys.exit(fn())`), with --help: its usage."""
  module, _, attr = _console_scripts()[name].partition(":")
  code = f"import sys; sys.argv = [{name!r}, '--help']; from {module} import {attr}; sys.exit({attr}())"
  r = subprocess.run([sys.executable, "-c", code], env=_env(), capture_output=True, text=True, timeout=240)
  log = r.stdout + r.stderr
  assert r.returncode in (0, 1) and "Traceback" not in log, log[-3000:]  # argparse exits 0, absl 1
  assert "usage:" in log or "--workdir" in log, log[-3000:]
