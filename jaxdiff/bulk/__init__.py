"""Bulk sampling of a trained model: every device, resumable, deterministic per sample.

    request = jaxdiff.bulk.SampleRequest(num_samples=50_000, sampler="ddim", num_steps=50)
    summary = jaxdiff.bulk.generate("runs/digits", request=request)  # or generate(..., num_samples=...)
    config, model, schedule, params, step = jaxdiff.bulk.restore_model("runs/digits")
    plan = jaxdiff.bulk.plan_run("runs/digits", request=request)  # what generate would do, checked

`jaxdiff-sample` / `sample.py` (`jaxdiff.bulk.cli`) is the command-line front end. The output folder
holds `.npz` shards (`samples_{start:07d}_{end:07d}.npz`: "images" uint8 NHWC, or float32 with
output_format "float", or "points" float32, "labels" int32 (-1 = none), "index" int64), `run.json`
(the run's identity), `.sample.lock` while a run writes there, `summary.json`, `grid.png` or
`scatter.png`, and with `trajectory=True` `trajectory.png`. Beyond class labels a run can carry
per-sample captions or contexts, conditioning images and inpainting sources
(`jaxdiff.bulk.condition_tables`). See `jaxdiff.bulk.run` for the
determinism, parallelism and resume design.
"""

from jaxdiff.bulk.batches import make_batch_fn
from jaxdiff.bulk.condition_tables import Conditions, named_mask, resolve_conditions
from jaxdiff.bulk.folder import default_output
from jaxdiff.bulk.plan import RunPlan, plan_run
from jaxdiff.bulk.request import SampleRequest
from jaxdiff.bulk.run import generate
from jaxdiff.bulk.settings import (
  RunSettings,
  SamplingError,
  labels_for,
  parse_labels,
  resolve_run,
  resolve_settings,
)
from jaxdiff.shards import check_shard, layout, read_shard, shard_name
from jaxdiff.training.restore import load_run_config, params_digest, restore_model

__all__ = [
  "SamplingError",
  "generate",
  "plan_run",
  "RunPlan",
  "RunSettings",
  "SampleRequest",
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
