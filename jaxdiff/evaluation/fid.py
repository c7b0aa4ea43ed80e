"""FID: Fréchet distance between Inception pool3 statistics of samples and of a real data set.

Reference statistics are computed once per data set by `python -m jaxdiff.evaluation.fid_stats`
and saved as `.npz` with pytorch-fid's keys `mu` [2048] and `sigma` [2048, 2048] (so files are
interchangeable with pytorch-fid's), plus, when the data set has a held-out split,
`mu_heldout` / `sigma_heldout`: the baseline row, FID(held-out real images, reference).
FID is biased by the number of images: compare figures computed from equal counts
(`num` / `num_heldout` are stored in the file).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

import numpy as np

from jaxdiff.errors import DataError
from jaxdiff.evaluation.frechet import RunningStatistics, frechet_distance
from jaxdiff.fileio import atomic_write

__all__ = [
  "save_statistics",
  "load_statistics",
  "load_reference_batch",
  "statistics_from_batches",
  "evaluate_fid",
]


def save_statistics(
  path: str,
  mu: Any,
  sigma: Any,
  *,
  num: int | None = None,
  mu_heldout: Any = None,
  sigma_heldout: Any = None,
  num_heldout: int | None = None,
  **meta: Any,
) -> str:
  """Writes FID statistics to `path` (.npz) atomically; extra keyword values are stored as metadata."""
  mu = np.asarray(mu, np.float64)
  sigma = np.asarray(sigma, np.float64)
  if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
    raise DataError(f"statistics must be mu [D] and sigma [D, D], got {mu.shape} and {sigma.shape}")
  arrays: dict[str, Any] = {"mu": mu, "sigma": sigma}
  if num is not None:
    arrays["num"] = np.asarray(int(num))
  if (mu_heldout is None) != (sigma_heldout is None):
    raise DataError("give both mu_heldout and sigma_heldout, or neither")
  if mu_heldout is not None:
    arrays["mu_heldout"] = np.asarray(mu_heldout, np.float64)
    arrays["sigma_heldout"] = np.asarray(sigma_heldout, np.float64)
    if arrays["mu_heldout"].shape != mu.shape or arrays["sigma_heldout"].shape != sigma.shape:
      raise DataError("held-out statistics must have the same shapes as the reference statistics")
    if num_heldout is not None:
      arrays["num_heldout"] = np.asarray(int(num_heldout))
  for key, value in meta.items():
    arrays[f"meta_{key}"] = np.asarray(value)
  return atomic_write(path, lambda f: np.savez(f, **arrays))


def load_statistics(path: str | None, flag: str = "--fid_stats") -> dict[str, Any]:
  """Reads a statistics .npz (ours or pytorch-fid's): {"mu", "sigma", and optionally "mu_heldout", ...}."""
  if not path or not os.path.exists(path):
    what = "no file was given" if not path else f"{path} does not exist"
    raise FileNotFoundError(
      f"FID reference statistics are needed, but {what}. Compute them once with `python -m "
      f"jaxdiff.evaluation.fid_stats --config=YOUR_CONFIG.py --inception_weights=... --out=stats.npz` "
      f"and pass {flag}=stats.npz"
    )
  with np.load(path, allow_pickle=False) as f:
    out = {k: f[k] for k in f.files}
  if "mu" not in out or "sigma" not in out:
    raise DataError(f"{path} holds no FID statistics (keys 'mu' and 'sigma'); it has {sorted(out)}")
  d = out["mu"].shape
  if len(d) != 1 or out["sigma"].shape != (d[0], d[0]):
    raise DataError(f"{path}: mu {out['mu'].shape} / sigma {out['sigma'].shape} are not [D] / [D, D]")
  return out


def load_reference_batch(path: str, features_fn=None, *, use_images: bool = False) -> dict[str, Any]:
  """FID statistics of an ADM reference batch (guided-diffusion's evaluator format, e.g.
  VIRTUAL_imagenet256_labeled.npz): its pool_3 statistics 'mu' / 'sigma' when it holds them (and
  `use_images` is False), else those of its images 'arr_0' (uint8 NHWC) through `features_fn`."""
  if not path or not os.path.exists(path):
    raise FileNotFoundError(f"--reference={path}: no such file; give an ADM reference batch (.npz)")
  try:
    with np.load(path, allow_pickle=False) as f:
      keys = set(f.files)
      stats = {k: f[k] for k in ("mu", "sigma") if k in keys and not use_images}
      images = f["arr_0"] if "arr_0" in keys and len(stats) < 2 else None
  except (OSError, ValueError) as e:
    raise DataError(f"--reference={path} cannot be read as an .npz reference batch ({e})") from None
  if len(stats) == 2:
    mu, sigma = np.asarray(stats["mu"], np.float64), np.asarray(stats["sigma"], np.float64)
    if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
      raise DataError(f"--reference={path}: mu {mu.shape} / sigma {sigma.shape} are not [D] / [D, D]")
    return {"mu": mu, "sigma": sigma, "source": "statistics"}
  if images is None:
    want = "'arr_0' images" if use_images else "'mu' and 'sigma' statistics or 'arr_0' images"
    raise DataError(f"--reference={path} holds no {want} (ADM's reference batch keys); it has {sorted(keys)}")
  if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] not in (1, 3):
    raise DataError(
      f"--reference={path}: 'arr_0' must be uint8 NHWC images with 1 or 3 channels, got "
      f"{images.dtype} {images.shape}"
    )
  if features_fn is None:
    raise DataError(f"--reference={path} holds images only: its statistics need --inception_weights")
  mu, sigma, n = statistics_from_batches(
    features_fn, (images[i : i + 256] for i in range(0, len(images), 256))
  )
  return {"mu": mu, "sigma": sigma, "num": np.asarray(n), "source": "images"}


def statistics_from_batches(features_fn, batches: Iterable[Any], limit: int | None = None):
  """(mu, sigma, count) of features_fn(batch) over image batches (at most `limit` images)."""
  stats = None
  seen = 0
  for batch in batches:
    if limit is not None:
      batch = batch[: max(limit - seen, 0)]
    if len(batch) == 0:
      break
    feats = features_fn(batch)
    if stats is None:
      stats = RunningStatistics(feats.shape[1])
    stats.update(feats)
    seen += len(batch)
    if limit is not None and seen >= limit:
      break
  if stats is None:
    raise DataError("no images to compute statistics from")
  mu, sigma = stats.finalize()
  return mu, sigma, stats.count


def evaluate_fid(images: Any, stats: Any, features_fn) -> dict[str, Any]:
  """FID of sample images against reference statistics (a path or a load_statistics dict).

  features_fn: images -> [N, D] features, e.g. `InceptionFeatures.from_file(weights)`.
  Returns {"fid": {"samples": ..., "real_heldout": ... (NaN when the file has no held-out
  statistics)}, "info": {...}}.
  """
  if isinstance(stats, str) or stats is None:
    stats = load_statistics(stats)
  images = np.asarray(images)
  if images.ndim != 4 or images.shape[-1] not in (1, 3):
    raise DataError(f"FID needs NHWC images with 1 or 3 channels, got shape {images.shape}")
  if len(images) < 2:
    raise DataError(f"FID needs at least 2 sample images, got {len(images)}")
  mu_s, sigma_s, n = statistics_from_batches(
    features_fn, (images[i : i + 256] for i in range(0, len(images), 256))
  )
  if mu_s.shape != stats["mu"].shape:
    raise DataError(
      f"sample features have dimension {mu_s.shape[0]}, the reference statistics "
      f"{stats['mu'].shape[0]}: computed with a different feature network?"
    )
  fid = frechet_distance(mu_s, sigma_s, stats["mu"], stats["sigma"])
  if "mu_heldout" in stats:
    baseline = frechet_distance(stats["mu_heldout"], stats["sigma_heldout"], stats["mu"], stats["sigma"])
  else:
    baseline = float("nan")
  info = {
    "dataset": "fid",
    "num_samples": int(n),
    "num_reference": int(stats["num"]) if "num" in stats else None,
    "num_real_heldout": int(stats["num_heldout"]) if "num_heldout" in stats else None,
  }
  if "mu_heldout" not in stats:
    info["note"] = (
      "the statistics file has no held-out statistics: recompute it with "
      "fid_stats --heldout_split=test for the real held-out baseline"
    )
  return {"fid": {"samples": fid, "real_heldout": baseline}, "info": info}
