"""Bulk sampling of a trained model: every device, resumable, deterministic per sample.

    summary = jaxdiff.bulk.generate("runs/digits", num_samples=50_000, sampler="ddim", num_steps=50)
    config, model, schedule, params, step = jaxdiff.bulk.restore_model("runs/digits")
    plan = jaxdiff.bulk.plan_run("runs/digits", num_samples=1000)  # what generate would do, checked

`sample.py` is the command-line front end. The output folder holds `.npz` shards
(`samples_{start:07d}_{end:07d}.npz`: "images" uint8 NHWC or "points" float32, "labels" int32
(-1 = none), "index" int64), `run.json` (the run's identity), `summary.json`, `grid.png` or
`scatter.png`, and with `trajectory=True` `trajectory.png`. Beyond class labels a run can carry
per-sample captions or contexts, conditioning images and inpainting sources
(`jaxdiff.bulk.conditions`). See `jaxdiff.bulk.generate` for the
determinism, parallelism and resume design.
"""

from jaxdiff.bulk.conditions import Conditions, named_mask, resolve_conditions
from jaxdiff.bulk.generate import RunPlan, default_output, generate, make_batch_fn, plan_run
from jaxdiff.bulk.restore import load_run_config, params_digest, restore_model
from jaxdiff.bulk.settings import (
  RunSettings,
  SamplingError,
  labels_for,
  parse_labels,
  resolve_run,
  resolve_settings,
)
from jaxdiff.shards import check_shard, layout, read_shard, shard_name

__all__ = [
  "SamplingError",
  "generate",
  "plan_run",
  "RunPlan",
  "RunSettings",
  "restore_model",
  "load_run_config",
  "make_batch_fn",
  "default_output",
  "params_digest",
  "parse_labels",
  "labels_for",
  "resolve_settings",
  "resolve_run",
  "resolve_conditions",
  "Conditions",
  "named_mask",
  "layout",
  "shard_name",
  "check_shard",
  "read_shard",
]
