"""Demos of conditioning beyond class labels, with their figures and measured agreement.

    python scripts/demo_conditioning.py context --workdir=runs/digits_context   # captions, cross-attention
    python scripts/demo_conditioning.py sr --workdir=runs/digits_sr             # 4x4 -> 8x8 super-resolution
    python scripts/demo_conditioning.py inpaint --workdir=runs/digits           # complete digits from their top half

Each command trains its model first when the workdir holds no checkpoint (configs/digits_context.py,
configs/digits_sr.py, configs/digits.py; a few minutes on a CPU; `--train_steps` shortens it and
`--config.<section>.<field>=value` overrides a field as train.py does, e.g. a smaller network for a
smoke run; overrides of the `sample` section also apply to an existing workdir), then samples from
the EMA weights, writes its figures to --figures (default docs/figures) and its
numbers to WORKDIR/demo_<command>.json, and prints them.

- context: guided samples for each of the 60 captions "<class> <thin|thick> <slanted-left|upright|
  slanted-right>"; agreement of the samples with their caption (the digits judge's class, the
  measured stroke weight and slant) at guidance scales 1, 2 and 3, beside the null context
  (unconditional samples scored against the same captions) and the real held-out digits.
- sr: one DDIM sample per held-out digit (and four for their mean) from its 4x4 version; MSE /
  PSNR against the truth beside bicubic and nearest-neighbour upsampling.
- inpaint: the held-out digits completed from their top half by the class-conditional digits model
  used unconditionally (null class), through jaxdiff.bulk.generate, i.e. what
  `sample.py --inpaint_source=digits_test --inpaint_mask=top_half --labels=none` does, without and
  with RePaint resampling; the judge's agreement with the source digit's label, beside the real
  digits, the masked inputs and free unconditional samples.
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import io
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)

import jax  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from jaxdiff import images  # noqa: E402
from jaxdiff.bulk import generate, named_mask, read_shard, restore_model  # noqa: E402
from jaxdiff.config_sampling import sample_from_config  # noqa: E402
from jaxdiff.data import captions  # noqa: E402
from jaxdiff.data.derived_inputs import sr_input  # noqa: E402
from jaxdiff.data.embedded import load_digits_split  # noqa: E402
from jaxdiff.evaluation import DigitsJudge  # noqa: E402
from jaxdiff.evaluation.conditional_metrics import (  # noqa: E402
  caption_agreement,  # noqa: E402
  label_agreement,
  psnr,
  super_resolution_errors,
)
from jaxdiff.fileio import atomic_write_bytes  # noqa: E402
from jaxdiff.training import train  # noqa: E402

CONFIGS = {"context": "digits_context", "sr": "digits_sr", "inpaint": "digits"}


def _load_config(name: str):
  path = os.path.join(ROOT, "configs", f"{name}.py")
  spec = importlib.util.spec_from_file_location(f"jaxdiff_demo_{name}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def _parse_overrides(extra: list[str]) -> dict[str, str]:
  """{"section.field": "value"} from `--config.section.field=value` arguments (train.py's syntax)."""
  overrides = {}
  for arg in extra:
    if not (arg.startswith("--config.") and "=" in arg):
      raise SystemExit(f"demo_conditioning.py: error: unrecognized argument {arg!r}")
    key, value = arg[len("--config.") :].split("=", 1)
    overrides[key] = value
  return overrides


def _apply_overrides(config, overrides: dict[str, str], prefix: str = "") -> None:
  """Set each `section.field` of `config` to its value, parsed as a Python literal when it is one
  (`8`, `(1, 2)`, `True`) and kept as text otherwise; a field the config lacks is an error."""
  for key, text in overrides.items():
    if not key.startswith(prefix):
      continue
    *path, field = key.split(".")
    node = config
    for part in path:
      node = node[part]
    if field not in node:
      raise SystemExit(f"demo_conditioning.py: error: the config has no field {key!r}")
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
      value = lowered == "true"
    else:
      try:
        value = ast.literal_eval(text)
      except (ValueError, SyntaxError):
        value = text
    node[field] = value


def _ensure_trained(command: str, workdir: str, train_steps: int | None, overrides: dict[str, str]) -> None:
  ckpt = os.path.join(workdir, "checkpoints")
  if os.path.isdir(ckpt) and any(e.isdigit() for e in os.listdir(ckpt)):
    return
  config = _load_config(CONFIGS[command])
  _apply_overrides(config, overrides)
  if train_steps:
    config.train.num_steps = int(train_steps)
    config.train.checkpoint_every = min(config.train.checkpoint_every, int(train_steps))
  print(
    f"demo: no checkpoint in {workdir}: training configs/{CONFIGS[command]}.py for {config.train.num_steps} "
    "steps first",
    flush=True,
  )
  train(config, workdir)


def _figure(nrows: int, ncols: int, scale: float = 0.55):
  fig = Figure(figsize=(ncols * scale + 1.6, nrows * scale + 0.6), dpi=110)
  return fig


def _save(fig, path: str) -> str:
  buf = io.BytesIO()
  fig.savefig(buf, format="png", bbox_inches="tight")
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  atomic_write_bytes(path, buf.getvalue())
  print(f"demo: wrote {path}", flush=True)
  return path


def _rows_figure(rows: list[tuple[str, np.ndarray]], path: str, title: str) -> str:
  """Rows of 8x8 digits ([n, 8, 8, 1] in [-1, 1]) with a label at the left of each row."""
  ncols = len(rows[0][1])
  fig = _figure(len(rows), ncols, 0.6)
  axes = fig.subplots(len(rows), 1, squeeze=False)[:, 0]
  for ax, (label, x) in zip(axes, rows):
    ax.imshow(
      images.make_grid(x, nrow=ncols, padding=1)[..., 0],
      cmap="gray",
      vmin=0,
      vmax=255,
      interpolation="nearest",
    )
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=9)
  fig.suptitle(title, fontsize=10)
  return _save(fig, path)


def _write_json(workdir: str, name: str, obj: dict) -> None:
  path = os.path.join(workdir, f"demo_{name}.json")
  with open(path, "w") as f:
    json.dump(obj, f, indent=2, sort_keys=True, default=float)
  print(json.dumps(obj, indent=2, sort_keys=True, default=float))
  print(f"demo: wrote {path}", flush=True)


# ---------------------------------------------------------------- context


def _restore(args):
  """restore_model(workdir) with the `sample` overrides of the command line applied."""
  config, model, schedule, params, step = restore_model(args.workdir)
  _apply_overrides(config, args.overrides, prefix="sample.")
  return config, model, schedule, params, step


def run_context(args) -> dict:
  config, model, schedule, params, step = _restore(args)
  judge = DigitsJudge.load()
  caps = captions.all_captions()
  k = args.per_caption
  tokens = np.repeat(caps, k, axis=0)  # [60 k, 3], caption-major
  results = {
    "checkpoint_step": step,
    "samples_per_caption": k,
    "sampler": f"{config.sample.sampler}-{config.sample.num_steps}",
    "agreement": {},
  }
  key = jax.random.key(args.seed)
  t0 = time.time()
  x_null = np.asarray(sample_from_config(config, model, schedule, params, key, len(tokens)))
  results["agreement"]["null context (unconditional)"] = caption_agreement(x_null, tokens, judge)
  guided = {}
  for scale in args.scales:
    x = np.asarray(
      sample_from_config(
        config, model, schedule, params, key, len(tokens), context=tokens, guidance_scale=scale
      )
    )
    guided[scale] = x
    results["agreement"][f"guidance {scale:g}"] = caption_agreement(x, tokens, judge)
  xt, yt = load_digits_split("test")
  results["agreement"]["real held-out digits"] = caption_agreement(xt, captions.caption_tokens(xt, yt), judge)
  results["sampling_s"] = round(time.time() - t0, 1)

  # figure: one row per class, the six attribute combinations in columns, two samples each
  show = 2 if k >= 2 else 1
  scale = args.figure_scale if args.figure_scale in guided else args.scales[-1]
  x = guided[scale].reshape(60, k, 8, 8, 1)[:, :show]  # [60, show, ...]
  grid = images.make_grid(x.reshape(-1, 8, 8, 1), nrow=6 * show, padding=1)[..., 0]
  fig = _figure(10, 6 * show, 0.62)
  ax = fig.subplots()
  ax.imshow(grid, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
  tile = 9
  for j, (t, s) in enumerate((t, s) for t in captions.THICKNESS for s in captions.SLANTS):
    ax.text((j * show + show / 2) * tile, -2, f"{t}\n{s}", ha="center", va="bottom", fontsize=7)
  ax.set_yticks([(c + 0.5) * tile for c in range(10)], [str(c) for c in range(10)])
  ax.set_xticks([])
  agree = results["agreement"][f"guidance {scale:g}"]
  fig.suptitle(
    f"caption -> digit, guidance {scale:g}: class {agree['class']:.0%}, stroke {agree['thickness']:.0%}, "
    f"slant {agree['slant']:.0%} follow the caption",
    fontsize=9,
    y=1.02,
  )
  results["figure"] = _save(fig, os.path.join(args.figures, "conditioning_context.png"))
  _write_json(args.workdir, "context", results)
  return results


# ---------------------------------------------------------------- super-resolution


def run_sr(args) -> dict:
  config, model, schedule, params, step = _restore(args)
  factor = int(config.data.sr_factor)
  xt, yt = load_digits_split("test")
  low, bicubic = sr_input(xt, factor)
  t0 = time.time()
  samples = np.stack(
    [
      np.asarray(
        sample_from_config(
          config, model, schedule, params, jax.random.key(args.seed + i), len(xt), x_cond=bicubic
        )
      )
      for i in range(args.sr_samples)
    ]
  )
  sampling_s = time.time() - t0
  err = super_resolution_errors(samples, xt, bicubic, low, factor)
  nearest = np.repeat(np.repeat(low, factor, axis=1), factor, axis=2)
  mse_nearest = float(np.mean((nearest - xt) ** 2))
  err["mse"]["nearest"], err["psnr"]["nearest"] = mse_nearest, float(psnr(mse_nearest))
  per = err.pop("per_image")
  results = {
    "checkpoint_step": step,
    "sampler": f"{config.sample.sampler}-{config.sample.num_steps}",
    "sampling_s": round(sampling_s, 1),
    **err,
  }

  n = 14
  rows = [("4x4 input", nearest[:n]), ("bicubic", bicubic[:n]), ("sample 1", samples[0, :n])]
  if len(samples) > 1:
    rows.append(("sample 2", samples[1, :n]))
  rows.append(("truth", xt[:n]))
  results["figure"] = _rows_figure(
    rows,
    os.path.join(args.figures, "conditioning_sr.png"),
    f"4x4 -> 8x8 super-resolution of held-out digits (checkpoint {step})",
  )

  fig = _figure(4, 10, 0.9)
  ax1, ax2 = fig.subplots(1, 2)
  lim = float(max(per["bicubic"].max(), per["sample"].max())) * 1.05
  ax1.scatter(per["bicubic"], per["sample"], s=6, alpha=0.6)
  ax1.plot([0, lim], [0, lim], "k--", lw=0.8)
  ax1.set_xlim(0, lim)
  ax1.set_ylim(0, lim)
  ax1.set_xlabel("bicubic MSE")
  ax1.set_ylabel("diffusion sample MSE")
  ax1.set_title(f"per held-out digit: sample better on {err['win_rate']:.0%}", fontsize=9)
  names = ["nearest", "bicubic", "sample"] + [k for k in err["psnr"] if k.startswith("mean_of")]
  vals = [err["psnr"][k] for k in names]
  bars = ax2.bar(range(len(names)), vals, color=["#999", "#777", "#3a7", "#2a5"][: len(names)])
  ax2.set_xticks(range(len(names)), [k.replace("_", " ") for k in names], fontsize=8)
  ax2.set_ylabel("PSNR (dB), images in [-1, 1]")
  for b, v in zip(bars, vals):
    ax2.text(b.get_x() + b.get_width() / 2, v, f"{v:.1f}", ha="center", va="bottom", fontsize=8)
  ax2.set_ylim(min(vals) - 3, max(vals) + 2)
  ax2.set_title(f"{len(xt)} held-out digits", fontsize=9)
  results["error_figure"] = _save(fig, os.path.join(args.figures, "conditioning_sr_error.png"))
  _write_json(args.workdir, "sr", results)
  return results


# ---------------------------------------------------------------- inpainting


def run_inpaint(args) -> dict:
  judge = DigitsJudge.load()
  xt, yt = load_digits_split("test")
  n = len(xt)
  mask = named_mask(args.mask, (8, 8, 1))

  def run(tag: str, num: int, **kw) -> np.ndarray:
    out = os.path.join(args.workdir, f"demo_{tag}")
    summary = generate(
      args.workdir,
      out,
      num_samples=num,
      labels="none",
      sampler="ddpm",
      num_steps=args.num_steps,
      seed=args.seed,
      shard_size=num,
      **kw,
    )
    x = np.concatenate([read_shard(os.path.join(out, f))["images"] for f in summary["files"]])
    return x.astype(np.float32) / 127.5 - 1.0

  t0 = time.time()
  plain = run(
    f"inpaint_{args.mask}_r1", args.completions * n, inpaint_source="digits_test", inpaint_mask=args.mask
  )
  resampled = run(
    f"inpaint_{args.mask}_r{args.resample}",
    n,
    inpaint_source="digits_test",
    inpaint_mask=args.mask,
    repaint_resample=args.resample,
    repaint_jump=args.jump,
  )
  free = run("unconditional", n)
  sampling_s = time.time() - t0
  src_u8 = images.to_uint8(xt).astype(np.int32)
  kept = mask.astype(bool)[None]
  exact = all(
    np.array_equal(
      np.where(kept, images.to_uint8(c).astype(np.int32), 0), np.where(kept, src_u8[np.arange(len(c)) % n], 0)
    )
    for c in (plain, resampled)
  )
  masked = np.where(kept, xt, -1.0)
  labels_plain = yt[np.arange(len(plain)) % n]
  results = {
    "mask": args.mask,
    "sampler": f"ddpm-{args.num_steps}",
    "sampling_s": round(sampling_s, 1),
    "known_region_equals_source": bool(exact),
    "judge_agrees_with_source_label": {
      f"completions (replacement, {args.completions} per digit)": label_agreement(plain, labels_plain, judge),
      f"completions (RePaint, resample {args.resample}, jump {args.jump})": label_agreement(
        resampled, yt, judge
      ),
      "masked inputs (kept half, rest blank)": label_agreement(masked, yt, judge),
      "unconditional samples (no inpainting)": label_agreement(free, yt, judge),
      "real held-out digits": label_agreement(xt, yt, judge),
    },
    "n_sources": n,
  }
  m = 14
  rows = [("source", xt[:m]), ("kept", masked[:m])]
  rows += [(f"completion {i + 1}", plain[i * n : i * n + m]) for i in range(min(args.completions, 3))]
  rows.append((f"RePaint r={args.resample}", resampled[:m]))
  agree = results["judge_agrees_with_source_label"]
  title = (
    f"held-out digits completed from their {args.mask.replace('_', ' ')} (unconditional model): judge agrees "
    f"with the source {list(agree.values())[0]:.0%} / {list(agree.values())[1]:.0%} (RePaint)"
  )
  results["figure"] = _rows_figure(
    rows, os.path.join(args.figures, f"conditioning_inpaint_{args.mask}.png"), title
  )
  _write_json(args.workdir, "inpaint", results)
  return results


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("command", choices=["context", "sr", "inpaint"])
  parser.add_argument("--workdir", default=None, help="training workdir (default runs/<config>)")
  parser.add_argument("--figures", default=os.path.join(ROOT, "docs", "figures"))
  parser.add_argument("--train_steps", type=int, default=None, help="steps when the demo has to train first")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--per_caption", type=int, default=8, help="context: samples per caption")
  parser.add_argument(
    "--scales", type=float, nargs="+", default=[1.0, 2.0, 3.0], help="context: guidance scales"
  )
  parser.add_argument("--figure_scale", type=float, default=2.0, help="context: the guidance scale shown")
  parser.add_argument("--sr_samples", type=int, default=4, help="sr: samples per held-out digit")
  parser.add_argument(
    "--mask", default="top_half", help="inpaint: the kept region (jaxdiff.bulk.condition_tables.MASKS)"
  )
  parser.add_argument("--completions", type=int, default=3, help="inpaint: completions per digit")
  parser.add_argument("--num_steps", type=int, default=50, help="inpaint: DDPM steps")
  parser.add_argument("--resample", type=int, default=5, help="inpaint: RePaint resampling")
  parser.add_argument("--jump", type=int, default=5, help="inpaint: RePaint jump length")
  args, extra = parser.parse_known_args(argv)
  args.overrides = _parse_overrides(extra)
  args.workdir = os.path.abspath(args.workdir or os.path.join(ROOT, "runs", CONFIGS[args.command]))
  _ensure_trained(args.command, args.workdir, args.train_steps, args.overrides)
  {"context": run_context, "sr": run_sr, "inpaint": run_inpaint}[args.command](args)
  return 0


if __name__ == "__main__":
  sys.exit(main())
