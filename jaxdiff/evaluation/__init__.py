"""Sample-quality metrics, each reported beside the same figure for real held-out data.

    report = jaxdiff.evaluation.evaluate_digits(samples, labels_requested)   # digits judge
    report = jaxdiff.evaluation.evaluate_toy2d(points, "s_curve")             # SWD, MMD
    report = jaxdiff.evaluation.evaluate_fid(images, "stats.npz", InceptionFeatures.from_file(w))
    print(jaxdiff.evaluation.format_table(report))

A report maps each metric to {"samples": ..., "real_heldout": ...}, plus "info". Command lines:
`python -m jaxdiff.evaluation` (score sample shards), `python -m jaxdiff.evaluation.fid_stats`
(FID reference statistics), `python scripts/train_digits_judge.py` (the judge's weights).
Likelihood: `bits_per_dim(model_fn, schedule, x0, key)` from DDPM's variational bound;
`ode_log_likelihood(model_fn, process, x0, key, prediction=...)` (nats) and `ode_bits_per_dim` from
the probability-flow ODE, for every process (`python -m jaxdiff.evaluation --likelihood`).

Modules are imported on first use, so `import jaxdiff.evaluation` stays light.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
  # frechet
  "frechet_distance": "frechet",
  "feature_statistics": "frechet",
  "frechet_distance_from_features": "frechet",
  "RunningStatistics": "frechet",
  # distances
  "sliced_wasserstein": "distances",
  "mmd_rbf": "distances",
  "nearest_neighbour_distances": "distances",
  # evaluations
  "memorisation": "memorization",
  "DigitsJudge": "digits_judge",
  "evaluate_digits": "digits",
  "load_digits_splits": "digits",
  "evaluate_toy2d": "toy2d",
  "evaluate_fid": "fid",
  "save_statistics": "fid",
  "load_statistics": "fid",
  "InceptionV3": "inception",
  "InceptionFeatures": "inception",
  "load_inception_variables": "inception",
  "convert_pytorch_fid_weights": "inception",
  "bits_per_dim": "likelihood",
  "vlb_terms": "likelihood",
  "discretized_gaussian_log_likelihood": "likelihood",
  "ode_log_likelihood": "ode_likelihood",
  "ode_bits_per_dim": "ode_likelihood",
  "ode_bits_per_dim_terms": "ode_likelihood",
  "ODELikelihood": "ode_likelihood",
  "dequantize": "ode_likelihood",
  "evaluate_likelihood": "cli",
  "evaluate_for_training": "periodic",
  "check_eval_config": "periodic",
  "format_table": "report",
  "write_json": "report",
  "flatten": "report",
  "load_samples": "cli",
  "evaluate_samples": "cli",
  "psnr": "conditional_metrics",
  "super_resolution_errors": "conditional_metrics",
  "label_agreement": "conditional_metrics",
  "caption_agreement": "conditional_metrics",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
  module = _EXPORTS.get(name)
  if module is None:
    raise AttributeError(f"module 'jaxdiff.evaluation' has no attribute {name!r}")
  value = getattr(importlib.import_module(f"jaxdiff.evaluation.{module}"), name)
  globals()[name] = value
  return value


def __dir__():
  return sorted(set(globals()) | set(_EXPORTS))
