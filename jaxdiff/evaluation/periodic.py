"""Evaluation during training: `evaluate_for_training(config, sample_fn)` -> flat scalars for TensorBoard.

The training loop calls it every `config.eval.every` steps (0: never) with a function that
draws samples from the current (EMA) model:

    sample_fn(num, key, labels) -> float array in [-1, 1]: [num, H, W, C] images or [num, 2] points
                                   (labels: int32 [num] requested classes, or None)

and logs the returned {"eval/<metric>": samples' figure, "eval/<metric>_real_heldout": baseline}.
The same key is used at every evaluation, so the curves show the model changing, not the noise.
Samples with NaN or Inf (a diverging model) are left out and counted in "eval/nonfinite_share",
so an evaluation never stops training.

  digits        evaluate_digits on config.eval.num_samples samples; class-conditional models
                (config.model.num_classes > 0) are asked for the classes 0..9 in turn.
  toy2d/<name>  evaluate_toy2d (SWD, MMD against fresh draws).
  tfds/<name>   FID; needs config.eval.inception_weights and config.eval.fid_stats (files).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from jaxdiff import images as image_utils
from jaxdiff.configs import with_defaults
from jaxdiff.errors import ConfigError
from jaxdiff.evaluation.digits import evaluate_digits
from jaxdiff.evaluation.fid import evaluate_fid
from jaxdiff.evaluation.inception import InceptionFeatures
from jaxdiff.evaluation.report import flatten
from jaxdiff.evaluation.toy2d import evaluate_toy2d

__all__ = ["evaluate_for_training", "check_eval_config", "EVAL_KEY_TAG"]

EVAL_KEY_TAG = 0x45564C  # folded into PRNGKey(config.seed): evaluation noise apart from training noise


def _family(config) -> str:
  name = config.data.name
  if name == "digits":
    return "digits"
  if name.startswith("toy2d/"):
    return "toy2d"
  return "fid"


def check_eval_config(config) -> None:
  """Fails at start-up (ValueError naming the field) when periodic evaluation cannot run. A partial
  config takes the package defaults for what it lacks."""
  config = with_defaults(config)
  every = int(config.eval.every or 0)
  if every < 0:
    raise ConfigError(f"config.eval.every={every} must be >= 0 (0 disables periodic evaluation)")
  if every == 0:
    return
  if int(config.model.cond_channels or 0) > 0:
    raise ConfigError(
      "periodic evaluation (config.eval.every) draws free samples; an image-conditioned model "
      "(config.model.cond_channels > 0) has none: set --config.eval.every=0 and measure it "
      "against its inputs (scripts/demo_conditioning.py sr)"
    )
  num = config.eval.num_samples
  if isinstance(num, bool) or not isinstance(num, int) or num < 2:
    raise ConfigError(f"config.eval.num_samples={num!r} must be an integer >= 2")
  if _family(config) == "fid":
    for field in ("inception_weights", "fid_stats"):
      path = config.eval[field]
      if not path:
        raise ConfigError(
          f"periodic FID for {config.data.name} needs config.eval.{field} (a local file; see "
          "`python -m jaxdiff.evaluation.fid_stats --help`), or set --config.eval.every=0"
        )
      if not os.path.exists(path):
        raise FileNotFoundError(f"config.eval.{field}={path} does not exist")


@functools.lru_cache(maxsize=2)
def _inception(path: str):
  return InceptionFeatures.from_file(path, flag="config.eval.inception_weights")


def evaluate_for_training(
  config, sample_fn: Callable[[int, Any, np.ndarray | None], Any], *, key: Any = None, prefix: str = "eval/"
) -> dict[str, float]:
  """Draws config.eval.num_samples samples with sample_fn and returns flat scalar metrics (a partial
  config takes the package defaults for what it lacks)."""
  config = with_defaults(config)
  check_eval_config(config)
  num = int(config.eval.num_samples)
  if key is None:
    key = jax.random.fold_in(jax.random.PRNGKey(int(config.seed)), EVAL_KEY_TAG)
  family = _family(config)
  num_classes = int(config.model.num_classes or 0)
  labels = None
  if family == "digits" and num_classes > 0:
    labels = (np.arange(num) % num_classes).astype(np.int32)
  samples = np.asarray(sample_fn(num, key, labels), dtype=np.float32)
  finite = np.isfinite(samples.reshape(len(samples), -1)).all(axis=1)
  scalars = {f"{prefix}nonfinite_share": float(1.0 - finite.mean())}
  if finite.sum() < 2:
    return scalars
  if not finite.all():
    samples = samples[finite]
    labels = labels[finite] if labels is not None else None
  if family == "digits":
    report = evaluate_digits(samples, labels)
  elif family == "toy2d":
    report = evaluate_toy2d(samples, config.data.name, seed=int(config.seed))
  else:
    report = evaluate_fid(
      image_utils.to_uint8(samples), config.eval.fid_stats, _inception(config.eval.inception_weights)
    )
  scalars.update(flatten(report, prefix))
  return scalars
