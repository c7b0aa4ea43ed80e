"""`python -m jaxdiff.evaluation`: score a sample set against real data and write a JSON report.

    python -m jaxdiff.evaluation --samples=runs/digits/generated --dataset=digits --out=report.json
    python -m jaxdiff.evaluation --samples=runs/toy2d/generated --dataset=toy2d/s_curve
    python -m jaxdiff.evaluation --samples=DIR --dataset=fid --fid_stats=cifar10_stats.npz \\
        --inception_weights=inception_fid.npz
    python -m jaxdiff.evaluation --samples=DIR --reference=VIRTUAL_imagenet256_labeled.npz \\
        --inception_weights=inception_fid.npz   # ADM's reference batch: its mu / sigma, or arr_0 images

    python -m jaxdiff.evaluation --likelihood --workdir=runs/digits --num_examples=64 --out=nll.json

Samples are `.npz` shards (a file, or every `*.npz` in a directory) holding "images" (uint8
NHWC) or "points" (float32 [N, D]), optionally "labels" (int32, the requested class, -1 for
none) and "index" (int, the sample's global number: shards are ordered by it and repeated
indices, e.g. from a resumed sampling run, are counted once).

`--likelihood` scores held-out data under a trained model instead: bits/dim (images; 8-bit data
uniformly dequantised, score_sde's convention) or nats per example (2-D points) by the
probability-flow ODE (`jaxdiff.evaluation.ode_likelihood`), next to DDPM's variational bound for
discrete-chain ('vp') models (`jaxdiff.evaluation.likelihood`), on the same examples.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxdiff import config_sampling, fileio, schedules
from jaxdiff.conditioning import Conditioning
from jaxdiff.data import load_arrays, sample_toy2d
from jaxdiff.errors import DataError, run_cli
from jaxdiff.evaluation.digits import evaluate_digits
from jaxdiff.evaluation.digits_judge import DigitsJudge
from jaxdiff.evaluation.fid import evaluate_fid, load_reference_batch, load_statistics
from jaxdiff.evaluation.inception import InceptionFeatures
from jaxdiff.evaluation.likelihood import bits_per_dim
from jaxdiff.evaluation.ode_likelihood import PROBES, ode_bits_per_dim_terms, ode_likelihood
from jaxdiff.evaluation.report import format_table, write_json
from jaxdiff.evaluation.toy2d import evaluate_toy2d
from jaxdiff.shards import read_samples
from jaxdiff.training.restore import restore_model

__all__ = ["load_samples", "evaluate_samples", "evaluate_likelihood", "check_image_range", "main", "run_cli"]

PROG = "python -m jaxdiff.evaluation"

# Float images are jaxdiff's [-1, 1]; a model's unclipped samples may overshoot a little, so only
# values beyond this bound are refused (0..255 or 0..1-scaled-by-255 pixels are far outside it).
FLOAT_IMAGE_BOUND = 1.5


def check_image_range(images: np.ndarray, where: str = "samples") -> None:
  """DataError unless `images` are uint8 (0..255) or floats in [-1, 1] (within FLOAT_IMAGE_BOUND):
  floats in 0..255 would otherwise be scored as images thousands of times too bright."""
  arr = np.asarray(images)
  if arr.dtype == np.uint8 or not np.issubdtype(arr.dtype, np.floating) or arr.size == 0:
    return
  finite = arr[np.isfinite(arr)]
  if finite.size == 0:
    return  # all NaN: the metrics' own finiteness checks name that
  lo, hi = float(finite.min()), float(finite.max())
  if lo < -FLOAT_IMAGE_BOUND or hi > FLOAT_IMAGE_BOUND:
    hint = " (0..255 pixel values?)" if hi > 2.0 and lo >= -FLOAT_IMAGE_BOUND else ""
    raise DataError(
      f"{where}: float images must be in [-1, 1] (jaxdiff's convention), these span {lo:g}..{hi:g}{hint}; "
      "store uint8 0..255 images (as sample.py does) or map floats v in 0..255 to v / 127.5 - 1."
    )


def _check_writable(path: str) -> None:
  """Fail before minutes of evaluation when --out cannot be written (read-only, missing rights, a
  folder): write and remove a probe file beside where the report will go."""
  if fileio.isdir(path):
    raise DataError(f"--out={path} is a folder; give a file name for the JSON report (e.g. report.json).")
  probe = f"{path}.probe"
  try:
    fileio.atomic_write_text(probe, "")
    fileio.remove(probe)
  except OSError as e:
    raise DataError(f"--out={path} cannot be written ({e.strerror or e}); choose a writable path.") from None


def load_samples(path: str) -> dict[str, Any]:
  """Reads sample shards into {"images" | "points": array, "labels": int32 [N] or None, "index": [N] or
  None, "duplicates": int} (`jaxdiff.shards.read_samples`)."""
  return read_samples(path)


def evaluate_samples(
  samples: dict[str, Any],
  dataset: str,
  *,
  seed: int = 0,
  fid_stats: str | None = None,
  inception_weights: str | None = None,
  batch_size: int = 64,
  judge_path: str | None = None,
  reference: str | None = None,
  reference_images: bool = False,
) -> dict[str, Any]:
  """Dispatches a loaded sample set to the evaluation of `dataset` (digits | toy2d/<name> | fid);
  `reference`: FID against an ADM reference batch (.npz) instead of `fid_stats`."""
  if dataset == "digits":
    if "images" not in samples:
      raise DataError("--dataset=digits needs image samples (shards with an 'images' array)")
    check_image_range(samples["images"])
    labels = samples.get("labels")
    if labels is not None and not np.any(labels >= 0):
      labels = None
    judge = DigitsJudge.load(judge_path) if judge_path else None
    report = evaluate_digits(samples["images"], labels, judge=judge)
  elif dataset.startswith("toy2d/"):
    if "points" not in samples:
      raise DataError(f"--dataset={dataset} needs point samples (shards with a 'points' array)")
    report = evaluate_toy2d(samples["points"], dataset, seed=seed)
  elif dataset == "fid" and reference:
    if "images" not in samples:
      raise DataError("--reference needs image samples (shards with an 'images' array)")
    check_image_range(samples["images"])
    features = InceptionFeatures.from_file(inception_weights, batch_size=batch_size)
    stats = load_reference_batch(reference, features, use_images=reference_images)
    report = evaluate_fid(samples["images"], stats, features)
    report["info"].pop("note", None)  # ADM's reference batches carry no held-out statistics
    report["info"].update(reference=reference, reference_from=stats["source"])
  elif dataset == "fid":
    if "images" not in samples:
      raise DataError("--dataset=fid needs image samples (shards with an 'images' array)")
    check_image_range(samples["images"])
    stats = load_statistics(fid_stats)  # fail on a missing file before loading the network
    features = InceptionFeatures.from_file(inception_weights, batch_size=batch_size)
    report = evaluate_fid(samples["images"], stats, features)
  else:
    raise DataError(f"--dataset={dataset!r}: use 'digits', 'toy2d/<name>' (e.g. toy2d/s_curve) or 'fid'")
  if samples.get("duplicates"):
    report.setdefault("info", {})["duplicate_indices_dropped"] = int(samples["duplicates"])
  return report


def _held_out(config, split: str, num_examples: int, seed: int) -> tuple[np.ndarray, np.ndarray | None]:
  """(x, labels or None) to score: a split of an embedded image set, or fresh draws of 2-D data."""
  name = str(config.data.name)
  if name.startswith("toy2d/"):
    n = num_examples or 1000
    return np.asarray(sample_toy2d(name.split("/", 1)[1], n, seed), np.float32), None
  try:
    x, labels = load_arrays(config, split=split)
  except ValueError as e:  # ConfigError / DataError: a TFDS set, an unknown split
    raise DataError(f"--likelihood: {e}") from None
  if num_examples:
    x, labels = x[:num_examples], None if labels is None else labels[:num_examples]
  return np.asarray(x, np.float32), labels


def _check_likelihood_flags(
  labels: str, batch_size: int, num_examples: int, vlb_timesteps: int, ode_options
) -> None:
  """DataError naming the first likelihood flag out of its range."""
  if labels not in ("data", "null"):
    raise DataError(f"--likelihood_labels={labels!r}: use 'data' or 'null'.")
  for flag, value, lo in (
    ("batch_size", batch_size, 1),
    ("num_examples", num_examples, 0),
    ("vlb_timesteps", vlb_timesteps, 0),
    ("num_probes", ode_options.get("num_probes", 1), 1),
    ("num_steps", ode_options.get("num_steps"), 1),  # None: adaptive
    ("max_steps", ode_options.get("max_steps", 1), 1),
  ):
    if value is not None and int(value) < lo:
      raise DataError(f"--{flag}={value} must be >= {lo}.")


def _likelihood_info(
  workdir, config, step, params, split, seed, num_examples, labels, cond_spec, ode_options, vlb_timesteps
) -> dict[str, Any]:
  """The likelihood report's "info": what was scored, with which solver and divergence estimate."""
  return {
    "workdir": workdir,
    "checkpoint_step": int(step),
    "params": params,
    "process": str(config.diffusion.process),
    "prediction": str(config.diffusion.prediction),
    "data": str(config.data.name),
    "split": split if not str(config.data.name).startswith("toy2d/") else f"fresh draws (seed {seed})",
    "num_examples": int(num_examples),
    "labels": labels if cond_spec.labels else "unconditional model",
    "divergence": "exact trace"
    if ode_options.get("exact_trace")
    else (
      f"Hutchinson, {ode_options.get('num_probes', 1)} {ode_options.get('probe', 'rademacher')} probe(s)"
    ),
    "solver": f"{ode_options['num_steps']} fixed Dormand-Prince steps"
    if ode_options.get("num_steps")
    else (
      f"adaptive Dormand-Prince, rtol {ode_options.get('rtol', 1e-5):g}, atol {ode_options.get('atol', 1e-5):g}"
    ),
    "dequantisation": "uniform, bits/dim = -log2 p(y) / D + 7 (score_sde)"
    if config_sampling.is_image_config(config)
    else "none (continuous data)",
    "vlb_timesteps": vlb_timesteps,
  }


def evaluate_likelihood(
  workdir: str,
  *,
  split: str = "test",
  num_examples: int = 0,
  batch_size: int = 64,
  seed: int = 0,
  params: str = "ema",
  checkpoint_step: int | None = None,
  labels: str = "data",
  vlb_timesteps: int = 100,
  **ode_options: Any,
) -> dict[str, Any]:
  """Likelihood of held-out data under the model trained in `workdir`: the probability-flow ODE's
  bits/dim (images) or nats per example (points), plus DDPM's variational bound in bits/dim for a
  discrete-chain model (`vlb_timesteps` stratified KL terms; 0 skips it), each as {"mean",
  "stderr"} over the examples. labels: "data" (class-conditional models score log p(x | y) with
  the data's labels) or "null" (log p(x) of the null-class model). ode_options: those of
  `ode_likelihood` (exact_trace, num_probes, probe, rtol, atol, num_steps, max_steps)."""
  _check_likelihood_flags(labels, batch_size, num_examples, vlb_timesteps, ode_options)
  config, model, process, weights, step = restore_model(workdir, params, checkpoint_step)
  cond_spec = Conditioning.from_config(config)
  if config.model.self_condition or cond_spec.context or config.model.cond_channels:
    raise DataError(
      "--likelihood scores unconditional and class-conditional models; this one also takes "
      "self-conditioning, a context or a conditioning image."
    )
  x, y = _held_out(config, split, num_examples, seed)
  images = config_sampling.is_image_config(config)
  prediction = str(config.diffusion.prediction)
  fn = config_sampling.model_fn(model, weights)
  key = jax.random.key(seed)
  ode, vlb, steps, nfe = [], [], [], []
  t0 = time.perf_counter()
  for i, start in enumerate(range(0, len(x), batch_size)):
    xb = jnp.asarray(x[start : start + batch_size])
    lb = None if (y is None or labels == "null" or not cond_spec.labels) else y[start : start + batch_size]
    cond = cond_spec.sample_kwargs(len(xb), lb)[0]
    k_ode, k_vlb = jax.random.split(jax.random.fold_in(key, i))
    if images:
      values, out = ode_bits_per_dim_terms(
        fn, process, xb, k_ode, prediction=prediction, cond=cond, **ode_options
      )
    else:
      out = ode_likelihood(fn, process, xb, k_ode, prediction=prediction, cond=cond, **ode_options)
      values = -out.log_p
    ode.append(np.asarray(values, np.float64))
    steps.append(int(out.steps))
    nfe.append(int(out.nfe))
    if vlb_timesteps and isinstance(process, schedules.Schedule) and images:
      vlb.append(
        np.asarray(
          bits_per_dim(
            fn, process, xb, k_vlb, prediction=prediction,
            variance="learned_range" if config.model.learn_sigma else "fixed_small",
            cond=cond, num_kl_timesteps=int(vlb_timesteps),
          ),
          np.float64,
        )
      )  # fmt: skip
  ode_all = np.concatenate(ode)
  if not np.all(np.isfinite(ode_all)):
    raise DataError(
      "the probability-flow ODE did not finish within --max_steps (or the model returned NaN); "
      "raise --max_steps, loosen --rtol/--atol or pass --num_steps."
    )
  stat = lambda v: {
    "mean": float(v.mean()),
    "stderr": float(v.std(ddof=1) / math.sqrt(len(v))) if len(v) > 1 else None,
  }
  unit = "bits_per_dim" if images else "nats_per_example"
  report: dict[str, Any] = {f"ode_{unit}" if images else "ode_nll_nats": stat(ode_all)}
  if vlb:
    report["vlb_bits_per_dim"] = stat(np.concatenate(vlb))
  report["info"] = _likelihood_info(
    workdir,
    config,
    step,
    params,
    split,
    seed,
    len(x),
    labels,
    cond_spec,
    ode_options,
    int(vlb_timesteps) if vlb else None,
  )
  report["info"].update(
    solver_steps_per_batch=steps, model_evaluations_per_batch=nfe, seconds=round(time.perf_counter() - t0, 2)
  )
  return report


def format_likelihood(report: dict[str, Any]) -> str:
  """The likelihood report as a few lines of text."""
  lines = []
  for name, v in report.items():
    if name != "info":
      err = f" +- {v['stderr']:.4f}" if v.get("stderr") is not None else ""
      lines.append(f"{name:<22} {v['mean']:.4f}{err}")
  info = report["info"]
  lines.append(
    ", ".join(f"{k}={info[k]}" for k in ("data", "split", "num_examples", "process", "prediction", "labels"))
  )
  lines.append(f"{info['divergence']}; {info['solver']}; {info['seconds']}s")
  return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(
    prog=PROG,
    description=__doc__,
    formatter_class=argparse.RawDescriptionHelpFormatter,
  )
  p.add_argument("--samples", default=None, help="a .npz sample shard or a directory of them")
  p.add_argument("--dataset", default=None, help="digits | toy2d/<name> | fid")
  p.add_argument("--out", default="", help="JSON report to write (default: print only)")
  p.add_argument("--seed", type=int, default=0, help="seed of the fresh toy2d draws and projections")
  p.add_argument("--fid_stats", default=None, help="reference statistics .npz (fid_stats command)")
  p.add_argument(
    "--inception_weights",
    default=None,
    help="FID Inception weights: pytorch-fid's .pth (needs torch) or its converted .npz",
  )
  p.add_argument(
    "--reference",
    default=None,
    help="FID against an ADM reference batch .npz (its 'mu'/'sigma', else its 'arr_0' images); implies --dataset=fid",
  )
  p.add_argument(
    "--reference_images",
    action="store_true",
    help="with --reference: compute the statistics from its 'arr_0' images, not its stored 'mu'/'sigma'",
  )
  p.add_argument("--batch_size", type=int, default=64, help="Inception batch size")
  p.add_argument("--judge", default=None, help="digits judge weights (default: the shipped file)")
  g = p.add_argument_group("likelihood (--likelihood --workdir=W: held-out data under a trained model)")
  g.add_argument("--likelihood", action="store_true", help="probability-flow ODE bits/dim (+ DDPM's bound)")
  g.add_argument("--workdir", default=None, help="the training workdir (config.json and checkpoints/)")
  g.add_argument("--split", default="test", help="the data split to score (digits: test | train | all)")
  g.add_argument("--num_examples", type=int, default=0, help="score the first N examples (0: all)")
  g.add_argument("--params", default="ema", help="ema | raw")
  g.add_argument("--checkpoint_step", type=int, default=None, help="default: the newest readable one")
  g.add_argument(
    "--likelihood_labels", default="data", help="class-conditional models: data (p(x|y)) | null (p(x))"
  )
  g.add_argument(
    "--exact_trace", action="store_true", help="exact Jacobian trace (D model JVPs per evaluation)"
  )
  g.add_argument("--num_probes", type=int, default=1, help="Hutchinson probes per example")
  g.add_argument("--probe", default="rademacher", choices=PROBES, help="Hutchinson probe distribution")
  g.add_argument("--num_steps", type=int, default=None, help="fixed Dormand-Prince steps (default: adaptive)")
  g.add_argument("--rtol", type=float, default=1e-5, help="adaptive solver's relative tolerance")
  g.add_argument("--atol", type=float, default=1e-5, help="adaptive solver's absolute tolerance")
  g.add_argument("--max_steps", type=int, default=1000, help="cap on the adaptive solver's steps")
  g.add_argument(
    "--vlb_timesteps",
    type=int,
    default=100,
    help="'vp' models: DDPM's bound from K stratified KL terms (0: off)",
  )
  return p


def main(argv: Sequence[str] | None = None) -> int:
  parser = _parser()
  args = parser.parse_args(argv)
  if args.likelihood:
    if not args.workdir:
      parser.error("--likelihood needs --workdir (a training workdir)")
  elif args.reference and args.fid_stats:
    parser.error("give --reference (an ADM reference batch) or --fid_stats, not both")
  elif args.reference and args.dataset not in (None, "fid"):
    parser.error(f"--reference scores FID: leave out --dataset={args.dataset} (or give --dataset=fid)")
  elif not (args.samples and (args.dataset or args.reference)):
    parser.error("give --samples and --dataset or --reference (or --likelihood --workdir=...)")
  if args.out:
    _check_writable(args.out)
  if args.likelihood:
    report = evaluate_likelihood(
      args.workdir,
      split=args.split,
      num_examples=args.num_examples,
      batch_size=args.batch_size,
      seed=args.seed,
      params=args.params,
      checkpoint_step=args.checkpoint_step,
      labels=args.likelihood_labels,
      vlb_timesteps=args.vlb_timesteps,
      exact_trace=args.exact_trace,
      num_probes=args.num_probes,
      probe=args.probe,
      num_steps=args.num_steps,
      rtol=args.rtol,
      atol=args.atol,
      max_steps=args.max_steps,
    )
    print(format_likelihood(report))
    _write_report(report, args.out)
    return 0
  samples = load_samples(args.samples)
  report = evaluate_samples(
    samples,
    args.dataset or "fid",
    seed=args.seed,
    fid_stats=args.fid_stats,
    inception_weights=args.inception_weights,
    batch_size=args.batch_size,
    judge_path=args.judge,
    reference=args.reference,
    reference_images=args.reference_images,
  )
  print(format_table(report))
  _write_report(report, args.out)
  return 0


def _write_report(report: dict[str, Any], out: str) -> None:
  if not out:
    return
  try:
    write_json(report, out)
  except OSError as e:  # e.g. the disk filled up while evaluating
    raise DataError(f"--out={out} cannot be written ({e.strerror or e}); choose a writable path.") from None
  print(f"wrote {out}")


if __name__ == "__main__":
  sys.exit(run_cli(main, prog=PROG))
