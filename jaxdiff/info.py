"""What a training workdir holds, read-only: `python -m jaxdiff.info WORKDIR` (or `jaxdiff-info`).

Prints the config in brief (data, process and prediction, model, training budget), every checkpoint
step with its integrity (checked against its checksum manifest: verified, unverified when it has
none, or damaged naming the file), the sample folders in the workdir with their runs, and the last
metrics of metrics.jsonl. `workdir_info` returns the same as a dict (`--json` prints it). Nothing is
written, locked or restored; a folder that is not a workdir is one line and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

from jaxdiff import fileio
from jaxdiff.bulk.folder import LOCK_NAME, MANIFEST, SUMMARY
from jaxdiff.bulk.settings import MANIFEST_FORMAT
from jaxdiff.config_sampling import data_shape, is_image_config
from jaxdiff.errors import CheckpointError, SamplingError, run_cli
from jaxdiff.shards import layout, shard_name
from jaxdiff.training.checkpointer import checkpoint_dir
from jaxdiff.training.integrity import verify_step
from jaxdiff.training.restore import load_run_config

__all__ = ["workdir_info", "format_info", "main", "run"]

PROG = "jaxdiff.info"
METRICS = "metrics.jsonl"


def _read_json(path: str) -> Any:
  try:
    with fileio.open(path) as f:
      return json.load(f)
  except (OSError, ValueError):
    return None


def _config_summary(config) -> dict[str, Any]:
  d, m, t = config.diffusion, config.model, config.train
  process = {"name": str(d.process), "prediction": str(d.prediction)}
  if d.process == "vp":
    process.update(num_timesteps=int(d.num_timesteps), schedule=str(d.get("schedule", "")))
  elif d.process == "edm":
    process.update(sigma_min=float(d.sigma_min), sigma_max=float(d.sigma_max), sigma_data=float(d.sigma_data))
  elif d.process == "flow":
    process.update(shift=float(d.flow_shift))
  return {
    "data": {
      "name": str(config.data.name),
      "shape": list(data_shape(config)),
      "kind": "images" if is_image_config(config) else "points",
      "num_classes": int(m.num_classes),
    },
    "process": process,
    "model": {k: m[k] for k in ("name", "base_channels", "hidden_dim", "num_layers") if k in m},
    "training": {"num_steps": int(t.num_steps), "batch_size": int(t.batch_size)},
    "sample": {k: config.sample[k] for k in ("sampler", "num_steps", "guidance_scale")},
  }


def _checkpoints(workdir: str, config) -> dict[str, Any]:
  """Every step folder of the run's checkpoint folder with its integrity, read-only."""
  try:
    folder = checkpoint_dir(workdir, config)
  except CheckpointError as e:
    return {"folder": None, "error": str(e), "steps": []}
  steps = []
  names = fileio.listdir(folder) if fileio.isdir(folder) else []
  for name in sorted((n for n in names if n.isdigit()), key=int):
    step, path = int(name), fileio.join(folder, name)
    size = sum(fileio.getsize(os.path.join(r, f)) for r, _, files in fileio.walk(path) for f in files)
    try:
      status = "verified" if verify_step(path, step) else "unverified (no checksum manifest)"
    except CheckpointError as e:
      status = f"damaged: {e}"
    steps.append({"step": step, "status": status, "bytes": size})
  return {"folder": folder, "steps": steps}


def _sample_run(path: str, manifest: dict) -> dict[str, Any]:
  n, size = int(manifest.get("num_samples", 0)), int(manifest.get("shard_size", 1) or 1)
  expected = [shard_name(s, e) for s, e in layout(n, size)]
  present = set(fileio.listdir(path))
  summary = _read_json(os.path.join(path, SUMMARY)) or {}
  return {
    "folder": path,
    "method": f"{manifest.get('sampler')}-{manifest.get('num_steps')}",
    "seed": manifest.get("seed"),
    "params": manifest.get("params"),
    "checkpoint_step": manifest.get("checkpoint_step"),
    "num_samples": n,
    "shards_present": sum(name in present for name in expected),
    "shards": len(expected),
    "invocations": len(summary.get("runs", [])) if isinstance(summary, dict) else 0,
    "being_written": LOCK_NAME in present,
  }


def _sample_folders(workdir: str) -> list[dict[str, Any]]:
  """The sample folders (a run.json of jaxdiff's format) up to two levels below the workdir."""
  found = []
  for root, dirs, files in fileio.walk(workdir):
    depth = os.path.relpath(root, workdir).count(os.sep) + (root != workdir)
    if depth > 2 or os.path.basename(root) in ("checkpoints", "tensorboard"):
      dirs[:] = []
      continue
    if MANIFEST in files:
      manifest = _read_json(os.path.join(root, MANIFEST))
      if isinstance(manifest, dict) and manifest.get("format") == MANIFEST_FORMAT:
        found.append(_sample_run(root, manifest))
  return sorted(found, key=lambda r: r["folder"])


def _last_metrics(workdir: str) -> dict[str, Any] | None:
  path = os.path.join(workdir, METRICS)
  if not fileio.exists(path):
    return None
  last = None
  with fileio.open(path) as f:
    for line in f:
      try:
        row = json.loads(line)
      except ValueError:
        continue  # a line cut by a kill
      if isinstance(row, dict):
        last = row
  return last


def workdir_info(workdir: str) -> dict[str, Any]:
  """What `workdir` holds (see the module docstring); SamplingError when it is not a workdir."""
  workdir = fileio.abspath(workdir)
  config = load_run_config(workdir)
  return {
    "workdir": workdir,
    "config": _config_summary(config),
    "checkpoints": _checkpoints(workdir, config),
    "samples": _sample_folders(workdir),
    "metrics": _last_metrics(workdir),
  }


def _size(n: int) -> str:
  for unit in ("B", "KB", "MB", "GB"):
    if n < 1024 or unit == "GB":
      return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
    n /= 1024
  return str(n)


def format_info(info: dict[str, Any]) -> str:
  """`workdir_info` as the text the command prints."""
  c = info["config"]
  data, proc = c["data"], c["process"]
  lines = [
    f"workdir {info['workdir']}",
    f"  data      {data['name']}: {data['kind']} {data['shape']}"
    + (f", {data['num_classes']} classes" if data["num_classes"] else ""),
    "  process   " + ", ".join(f"{k} {v}" for k, v in proc.items()),
    "  model     " + ", ".join(f"{k} {v}" for k, v in c["model"].items()),
    f"  training  {c['training']['num_steps']} steps, batch {c['training']['batch_size']}",
    "  sampling  " + ", ".join(f"{k} {v}" for k, v in c["sample"].items()),
  ]
  ck = info["checkpoints"]
  lines.append(f"checkpoints {ck['folder'] or ck.get('error')}")
  lines += [f"  step {s['step']:>8}  {_size(s['bytes']):>9}  {s['status']}" for s in ck["steps"]]
  if not ck["steps"]:
    lines.append("  (none)")
  lines.append("samples")
  for r in info["samples"]:
    lines.append(
      f"  {os.path.relpath(r['folder'], info['workdir'])}: {r['method']}, seed {r['seed']}, {r['params']} params "
      f"of step {r['checkpoint_step']}; {r['num_samples']} samples, {r['shards_present']}/{r['shards']} "
      f"shards, {r['invocations']} invocation(s)" + ("; being written now" if r["being_written"] else "")
    )
  if not info["samples"]:
    lines.append("  (none)")
  m = info["metrics"]
  lines.append(
    "last metrics "
    + (
      ", ".join(f"{k} {v:.6g}" if isinstance(v, float) else f"{k} {v}" for k, v in m.items())
      if m
      else "(none)"
    )
  )
  return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
  parser.add_argument("workdir", help="a training workdir (config.json and checkpoints)")
  parser.add_argument("--json", action="store_true", help="print the information as JSON")
  args = parser.parse_args(argv)
  if not fileio.isdir(args.workdir):
    raise SamplingError(f"{args.workdir} is not a folder: give a training workdir.")
  info = workdir_info(args.workdir)
  print(json.dumps(info, indent=2, sort_keys=True) if args.json else format_info(info))
  return 0


def run() -> None:
  """The console script's entry point."""
  sys.exit(run_cli(main, prog=PROG))


if __name__ == "__main__":
  run()
