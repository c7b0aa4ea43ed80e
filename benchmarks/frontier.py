"""The few-step frontier: sample quality against network evaluations (NFE) for the DDPM-eps,
EDM and rectified-flow recipes, trained for the same number of steps with the same network.

    .venv/bin/python benchmarks/frontier.py                      # train (or reuse), sample, score, plot
    .venv/bin/python benchmarks/frontier.py --part=digits --recipes=digits
    .venv/bin/python benchmarks/frontier.py --plots_only          # tables and plots from the JSON lines
    .venv/bin/python benchmarks/frontier.py --tiny                # every step at toy sizes, in a temporary folder

For each recipe it trains `python train.py --config=configs/<recipe>.py --workdir=runs/frontier/<recipe>`
(skipped when the workdir holds the final checkpoint; a partly trained workdir resumes), then for each
deterministic sampler and NFE target samples with `jaxdiff.bulk.generate` (what sample.py runs) on the
recipe's own grid and scores the samples with `jaxdiff.evaluation`'s `evaluate_samples` (what
`python -m jaxdiff.evaluation` runs). One JSON line per cell goes to
benchmarks/results/frontier_<digits|s_curve>.jsonl; the plots go to docs/figures/frontier_*.png.

`--tiny` checks that the whole pipeline runs (the slow test tier runs it): one recipe per part (DDPM-eps
digits, flow S-curve), 2 training steps of a tiny network, NFE 3, two samplers, a few samples; workdirs, JSON lines and plots go to `--out` (default: a new
temporary folder), never into benchmarks/results or docs/figures.

NFE targets map to steps as: heun num_steps = (NFE + 1) // 2 (its actual NFE is 2n - 1), every other
sampler num_steps = NFE. unipc runs at the config's order (2) unless --unipc_order says otherwise.

The digits part also trains the one- and two-step recipes (`--few_step`: configs/digits_meanflow.py,
digits_shortcut.py, digits_consistency.py, same network and steps) and samples each with its own
sampler at 1 and 2 NFE; they join the plot and get a table of their own.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

PARTS = {
  # part: (dataset, recipes, results file, figure)
  "digits": (
    "digits",
    ["digits", "digits_edm", "digits_flow"],
    "frontier_digits.jsonl",
    "frontier_digits.png",
  ),
  "s_curve": ("toy2d/s_curve", ["toy2d", "toy2d_flow"], "frontier_s_curve.jsonl", "frontier_s_curve.png"),
}
# one- and two-step recipes of a part: recipe -> its own sampler, sampled at FEW_STEP_NFE only
FEW_STEP = {
  "digits": {
    "digits_meanflow": "meanflow",
    "digits_shortcut": "shortcut",
    "digits_consistency": "consistency",
  }
}
FEW_STEP_NFE = (1, 2)
DDPM_RECIPES = {"digits", "toy2d"}  # the discrete "vp" chain: DDIM is its first-order sampler
SAMPLERS = ["first_order", "heun", "dpmpp_2m", "dpmpp_3m", "unipc"]
LABELS = {
  "digits": "DDPM-eps",
  "digits_edm": "EDM",
  "digits_flow": "flow",
  "toy2d": "DDPM-eps",
  "toy2d_flow": "flow",
  "digits_meanflow": "MeanFlow",
  "digits_shortcut": "shortcut",
  "digits_consistency": "consistency (ECT)",
}


def _parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--part", default="digits,s_curve", help="comma list of: digits, s_curve")
  p.add_argument(
    "--recipes", default="", help="comma list restricting the recipes (default: all of the part)"
  )
  p.add_argument(
    "--few_step",
    default=",".join(FEW_STEP["digits"]),
    help="digits part: the one- and two-step recipes (comma list; empty: none), sampled at 1 and 2 NFE",
  )
  p.add_argument("--runs", default=os.path.join(ROOT, "runs", "frontier"), help="workdirs live here")
  p.add_argument("--train_steps", type=int, default=2500, help="digits recipes' training steps")
  p.add_argument(
    "--few_step_train_steps",
    type=int,
    default=0,
    help="one- and two-step recipes' training steps (0: each recipe's own config.train.num_steps)",
  )
  p.add_argument("--toy_train_steps", type=int, default=10_000, help="S-curve recipes' training steps")
  p.add_argument("--nfe", default="5,10,20,50", help="NFE targets")
  p.add_argument(
    "--drop_nfe50", default="", help="comma list of recipes whose NFE-50 cells are skipped (time budget)"
  )
  p.add_argument(
    "--samplers", default=",".join(SAMPLERS), help="first_order = ddim (DDPM) / euler (EDM, flow)"
  )
  p.add_argument("--num_samples", type=int, default=1000, help="digits samples per cell")
  p.add_argument("--toy_num_samples", type=int, default=2000, help="S-curve points per cell")
  p.add_argument(
    "--ddpm_grid",
    default="auto",
    help="grid of the DDPM recipes: leading | trailing | linspace | auto (ddim at 10 NFE with leading and "
    "trailing; the lower Fréchet / sliced Wasserstein wins)",
  )
  p.add_argument("--unipc_order", type=int, default=2)
  p.add_argument("--seed", type=int, default=0, help="sample i uses fold_in(key(seed), i) (sample.py --seed)")
  p.add_argument(
    "--results_name",
    default="",
    help="write the cells to benchmarks/results/<this> instead of frontier_<part>.jsonl (repeats, probes)",
  )
  p.add_argument("--results", default=os.path.join(ROOT, "benchmarks", "results"))
  p.add_argument("--figures", default=os.path.join(ROOT, "docs", "figures"))
  p.add_argument("--plots_only", action="store_true", help="only tables and plots from the JSON lines")
  p.add_argument("--no_train", action="store_true", help="never train: skip recipes that are not trained")
  p.add_argument(
    "--tiny",
    action="store_true",
    help="toy sizes (one recipe per part, 2 training steps of a tiny network, NFE 3, two samplers, few "
    "samples) into --out",
  )
  p.add_argument("--out", default="", help="with --tiny: the folder for workdirs, results and plots")
  return p


# --tiny: the settings that make every step of the frontier run in about a minute per part
TINY = {
  "recipes": "digits,toy2d_flow,digits_meanflow",  # a DDPM-eps chain (its grid choice too), a flow model
  "train_steps": 2,
  "toy_train_steps": 2,
  "few_step_train_steps": 2,
  "nfe": "3",
  "samplers": "first_order,dpmpp_2m",
  "num_samples": 24,
  "toy_num_samples": 64,
  "ddpm_grid": "trailing",  # the spacing test (--ddpm_grid=auto) would add four cells
  "few_step": "digits_meanflow",  # a two-time network, its JVP loss and its own sampler
}
TINY_TRAIN_FLAGS = {
  "train.batch_size": "16",
  "train.log_every": "1",
  "train.checkpoint_every": "2",
  "train.sample_every": "0",
  "train.compilation_cache_dir": "none",
  "optim.warmup_steps": "0",
}
TINY_MODEL_FLAGS = {
  "unet": {"model.base_channels": "8", "model.num_heads": "1", "model.num_groups": "4"},
  "mlp": {"model.hidden_dim": "32", "model.num_layers": "2"},
}


def apply_tiny(args) -> None:
  """--tiny: toy settings, and every output (workdirs, results, figures) under args.out."""
  import tempfile

  for name, value in TINY.items():
    setattr(args, name, value)
  args.out = os.path.abspath(args.out or tempfile.mkdtemp(prefix="frontier_tiny_"))
  args.runs = os.path.join(args.out, "runs")
  args.results = os.path.join(args.out, "results")
  args.figures = os.path.join(args.out, "figures")
  print(f"[frontier] --tiny: writing into {args.out}", flush=True)


# ---------------------------------------------------------------------------------------------- training


def _trained(workdir: str, steps: int) -> bool:
  ckpt = os.path.join(workdir, "checkpoints")
  if not os.path.isdir(ckpt):
    return False
  return any(name.isdigit() and int(name) >= steps for name in os.listdir(ckpt))


def _recipe_steps(recipe: str) -> int:
  """configs/<recipe>.py's own config.train.num_steps (the one-step recipes choose theirs)."""
  import importlib.util

  spec = importlib.util.spec_from_file_location(
    f"frontier_config_{recipe}", os.path.join(ROOT, "configs", recipe + ".py")
  )
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return int(module.get_config().train.num_steps)


def _train_command(recipe: str, workdir: str, steps: int, tiny: bool = False) -> list[str]:
  cmd = [
    sys.executable,
    os.path.join(ROOT, "train.py"),
    f"--config={os.path.join(ROOT, 'configs', recipe + '.py')}",
    f"--workdir={workdir}",
    f"--config.train.num_steps={steps}",
  ]
  if tiny:
    model = TINY_MODEL_FLAGS["mlp" if recipe.startswith("toy2d") else "unet"]
    cmd += [f"--config.{k}={v}" for k, v in {**TINY_TRAIN_FLAGS, **model}.items()]
  return cmd


def _train_time(runs: str, recipe: str) -> float | None:
  """The wall time of the run that trained `recipe` (runs/frontier/train_times.jsonl, last entry)."""
  path = os.path.join(runs, "train_times.jsonl")
  found = None
  if os.path.exists(path):
    with open(path) as f:
      for line in f:
        row = json.loads(line)
        if row.get("recipe") == recipe and row.get("rc", 0) == 0:
          found = row.get("wall_s")
  return found


def _step_time(workdir: str) -> float | None:
  """Seconds spent in training steps, from metrics.jsonl's steps_per_sec over each logging window."""
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return None
  total, prev = 0.0, 0
  with open(path) as f:
    for line in f:
      row = json.loads(line)
      if "steps_per_sec" in row and row["steps_per_sec"] > 0:
        total += (row["step"] - prev) / row["steps_per_sec"]
        prev = row["step"]
  return round(total, 1) if prev else None


def train(args, recipe: str, steps: int) -> dict | None:
  workdir = os.path.join(args.runs, recipe)
  if not _trained(workdir, steps):
    if args.no_train:
      print(f"[frontier] {recipe}: not trained to {steps} steps; skipped (--no_train)", flush=True)
      return None
    cmd = _train_command(recipe, workdir, steps, tiny=args.tiny)
    print("[frontier] " + " ".join(cmd), flush=True)
    os.makedirs(args.runs, exist_ok=True)
    t0 = time.perf_counter()
    rc = subprocess.call(cmd, cwd=ROOT)
    wall = round(time.perf_counter() - t0, 1)
    with open(os.path.join(args.runs, "train_times.jsonl"), "a") as f:
      f.write(json.dumps({"recipe": recipe, "rc": rc, "wall_s": wall}) + "\n")
    if rc != 0:
      print(f"[frontier] {recipe}: train.py exited {rc}", flush=True)
      return None
  return {
    "train_steps": steps,
    "train_wall_s": _train_time(args.runs, recipe),
    "train_step_s": _step_time(workdir),
  }


# ---------------------------------------------------------------------------------------------- sampling


def _sampler_name(recipe: str, sampler: str) -> str:
  if sampler == "first_order":
    return "ddim" if recipe in DDPM_RECIPES else "euler"
  return sampler


def _num_steps(sampler: str, nfe: int) -> int:
  return (nfe + 1) // 2 if sampler == "heun" else nfe


def _metrics(report: dict, dataset: str) -> dict:
  def pick(key):
    v = report.get(key)
    return v.get("samples") if isinstance(v, dict) else v

  def ref(key):
    v = report.get(key)
    return v.get("real_heldout") if isinstance(v, dict) else None

  if dataset == "digits":
    keys = ["frechet", "class_accuracy", "confident_share", "class_entropy", "memorisation"]
    out = {k: pick(k) for k in keys}
    out["frechet_real_heldout"] = ref("frechet")
  else:
    out = {k: pick(k) for k in ("swd", "mmd")}
    out.update(swd_real_heldout=ref("swd"), mmd_real_heldout=ref("mmd"))
  return {k: (None if v is None else float(v)) for k, v in out.items()}


def run_cell(
  args, recipe: str, dataset: str, sampler: str, nfe_target: int, grid: str, train_info: dict
) -> dict:
  from jaxdiff import samplers as samplers_lib
  from jaxdiff.bulk import generate
  from jaxdiff.evaluation.cli import evaluate_samples, load_samples

  name = _sampler_name(recipe, sampler)
  steps = _num_steps(name, nfe_target)
  workdir = os.path.join(args.runs, recipe)
  num = args.num_samples if dataset == "digits" else args.toy_num_samples
  out = os.path.join(
    workdir, "frontier", f"{name}_{grid or 'default'}_{steps}" + (f"_seed{args.seed}" if args.seed else "")
  )
  grid_options = {"grid": grid or None}
  if name == "unipc":
    grid_options["order"] = args.unipc_order
  row = {"recipe": recipe, "sampler": name, "grid": grid or "default", "num_steps": steps, "seed": args.seed}
  if name == "unipc":
    row["order"] = args.unipc_order
  row["nfe_target"] = nfe_target
  row["nfe"] = int(samplers_lib.nfe(name, steps))
  cmd = (
    f"python sample.py --workdir={os.path.relpath(workdir, ROOT)} --num_samples={num} --sampler={name} "
    f"--num_steps={steps}"
    + (f" --grid={grid}" if grid else "")
    + (f" --order={args.unipc_order}" if name == "unipc" else "")
    + (f" --seed={args.seed}" if args.seed else "")
  )
  t0 = time.perf_counter()
  try:
    summary = generate(
      workdir,
      out,
      num_samples=num,
      sampler=name,
      num_steps=steps,
      grid_options=grid_options,
      seed=args.seed,
      progress=False,
    )
    sample_wall = time.perf_counter() - t0
    report = evaluate_samples(load_samples(out), dataset)
    row.update(_metrics(report, dataset))
    row.update(
      sample_wall_s=round(sample_wall, 2),
      generation_s=summary.get("generation_s"),
      compile_s=summary.get("compile_s"),
      nonfinite_samples=summary.get("runs", [{}])[-1].get("nonfinite_samples"),
      num_samples=num,
      error=None,
    )
  except Exception as e:  # one failing cell is a finding, not the end of the benchmark
    if args.tiny:  # ... except in the check that every step runs
      raise
    row.update(
      num_samples=num, error=f"{type(e).__name__}: {e}", sample_wall_s=round(time.perf_counter() - t0, 2)
    )
  row.update(train_info)
  row["command"] = cmd + " --output=OUT"
  return row


def _append(path: str, row: dict) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "a") as f:
    f.write(json.dumps(row) + "\n")


def _done_cells(path: str) -> set:
  done = set()
  if os.path.exists(path):
    with open(path) as f:
      for line in f:
        r = json.loads(line)
        if not r.get("error"):
          done.add((r["recipe"], r["sampler"], r["grid"], r["num_steps"], r.get("seed", 0)))
  return done


def _score(row: dict) -> float:
  v = row.get("frechet", row.get("swd"))
  return math.inf if v is None or not math.isfinite(v) else v


def run_part(args, part: str) -> None:
  dataset, recipes, results_name, _ = PARTS[part]
  chosen = [r for r in args.recipes.split(",") if r] or recipes
  path = os.path.join(args.results, args.results_name or results_name)
  nfes = [int(n) for n in args.nfe.split(",") if n]
  drop50 = {r for r in args.drop_nfe50.split(",") if r}
  steps = args.train_steps if part == "digits" else args.toy_train_steps
  for recipe in [r for r in recipes if r in chosen]:
    info = train(args, recipe, steps)
    if info is None:
      continue
    grid = ""
    if recipe in DDPM_RECIPES:
      grid = args.ddpm_grid
      if grid == "auto":
        # every sampler at 10 NFE on both spacings; the lower median score wins
        scores = {}
        for g in ("leading", "trailing"):
          cells = [_cell(args, path, recipe, dataset, smp, 10, g, info) for smp in args.samplers.split(",")]
          vals = sorted(_score(r) if r else math.inf for r in cells)
          scores[g] = vals[len(vals) // 2]
        grid = min(scores, key=scores.get)
        print(f"[frontier] {recipe}: grid {grid} (median at 10 NFE: {scores})", flush=True)
    for nfe in nfes:
      if nfe == 50 and recipe in drop50:
        continue
      for sampler in args.samplers.split(","):
        _cell(args, path, recipe, dataset, sampler, nfe, grid, info)
  few = [r for r in args.few_step.split(",") if r]
  for recipe, sampler in FEW_STEP.get(part, {}).items():
    if recipe not in few or (args.recipes and recipe not in chosen):
      continue
    info = train(args, recipe, args.few_step_train_steps or _recipe_steps(recipe))
    if info is not None:
      for nfe in FEW_STEP_NFE:
        _cell(args, path, recipe, dataset, sampler, nfe, "", info)


def _cell(args, path, recipe, dataset, sampler, nfe, grid, info) -> dict | None:
  name = _sampler_name(recipe, sampler)
  key = (recipe, name, grid or "default", _num_steps(name, nfe), args.seed)
  if key in _done_cells(path):
    return _find(path, key)
  row = run_cell(args, recipe, dataset, sampler, nfe, grid, info)
  _append(path, row)
  score = row.get("frechet", row.get("swd"))
  print(
    f"[frontier] {recipe} {name} {grid or 'default'} steps {key[3]} nfe {row['nfe']}: "
    f"{score} {row.get('error') or ''}",
    flush=True,
  )
  return row


def _find(path: str, key) -> dict | None:
  found = None
  with open(path) as f:
    for line in f:
      r = json.loads(line)
      if (r["recipe"], r["sampler"], r["grid"], r["num_steps"], r.get("seed", 0)) == key and not r.get(
        "error"
      ):
        found = r
  return found


# ---------------------------------------------------------------------------------------------- reports


def load_rows(path: str) -> list[dict]:
  """The latest row of each cell; for the DDPM recipes only the grid that the frontier kept."""
  if not os.path.exists(path):
    return []
  cells = {}
  with open(path) as f:
    for line in f:
      r = json.loads(line)
      cells[(r["recipe"], r["sampler"], r["grid"], r["num_steps"], r.get("seed", 0))] = r
  return list(cells.values())


def _frontier_rows(rows: list[dict]) -> list[dict]:
  """Keeps, per recipe, the grid that won the DDPM spacing test (the lower median score over the samplers
  at 10 NFE; a grid with more cells first, i.e. the one that was carried through)."""
  by_recipe = {}
  for r in rows:
    by_recipe.setdefault(r["recipe"], {}).setdefault(r["grid"], []).append(r)
  out = []
  for grids in by_recipe.values():

    def rank(g, grids=grids):
      vals = sorted(_score(r) for r in grids[g] if r["nfe_target"] == 10)
      return (-len(grids[g]), vals[len(vals) // 2] if vals else math.inf)

    out.extend(grids[min(grids, key=rank)])
  return out


def _series(rows: list[dict]) -> dict:
  series = {}
  for r in rows:
    series.setdefault((r["recipe"], r["sampler"]), []).append(r)
  for v in series.values():
    v.sort(key=lambda r: r["nfe"])
  return series


def _fmt(v, digits=2) -> str:
  if v is None:
    return "—"
  if isinstance(v, float) and not math.isfinite(v):
    return "NaN"
  if abs(v) < 1e-2 and v != 0:
    return f"{v:.1e}"
  return f"{v:.{digits}f}"


def _grid_name(recipe: str, grid: str) -> str:
  own = {"digits_edm": "karras", "digits_flow": "flow", "toy2d_flow": "flow"}
  return own.get(recipe, grid) if grid == "default" else grid


def repeats_table(main: list[dict], repeats: list[dict]) -> str:
  """Fréchet of the repeated cells for each seed (seed 0 from the main table), with the mean."""
  cells = {}
  for r in main + repeats:
    cells.setdefault((r["recipe"], r["sampler"], r["grid"], r["num_steps"]), {})[r.get("seed", 0)] = r
  seeds = sorted({r.get("seed", 0) for r in repeats} | {0})
  lines = [
    "| recipe | sampler | grid | NFE | " + " | ".join(f"seed {s}" for s in seeds) + " | mean |",
    "|" + "---|" * (5 + len(seeds)),
  ]
  keys = {(r["recipe"], r["sampler"], r["grid"], r["num_steps"]) for r in repeats}
  for key in sorted(keys, key=lambda k: (_recipe_order(k[0]), k[3], k[1])):
    by_seed = cells[key]
    vals = [by_seed[s].get("frechet") if s in by_seed else None for s in seeds]
    got = [v for v in vals if v is not None]
    nfe = next(iter(by_seed.values()))["nfe"]
    mean = sum(got) / len(got) if got else None
    lines.append(
      f"| {LABELS.get(key[0], key[0])} | {key[1]} | {_grid_name(key[0], key[2])} | {nfe} | "
      + " | ".join(_fmt(v) for v in vals)
      + f" | {_fmt(mean)} |"
    )
  return "\n".join(lines)


def _sci(v) -> str:
  return "—" if v is None else ("NaN" if not math.isfinite(v) else f"{v:.1e}")


def markdown_table(rows: list[dict], part: str, nfes: list[int], by_grid: bool = False) -> str:
  metric, extra = ("frechet", "class_accuracy") if part == "digits" else ("swd", "mmd")
  head = "| recipe | sampler | grid | " + " | ".join(f"NFE {n}" for n in nfes) + " |"
  lines = [head, "|" + "---|" * (3 + len(nfes))]
  ref = next(
    (r.get(f"{metric}_real_heldout") for r in rows if r.get(f"{metric}_real_heldout") is not None), None
  )
  ref2 = next(
    (r.get(f"{extra}_real_heldout") for r in rows if r.get(f"{extra}_real_heldout") is not None), None
  )
  if ref is not None:
    if part == "digits":
      cell = f"{_fmt(ref)}"
    else:
      cell = f"{_fmt(ref, 3)} / {_sci(ref2)}"
    lines.append("| real held-out | — | — | " + " | ".join([cell] * len(nfes)) + " |")
  groups = {}
  for r in rows:
    groups.setdefault((r["recipe"], r["grid"] if by_grid else "", r["sampler"]), []).append(r)
  for (recipe, _, sampler), cells in sorted(
    groups.items(), key=lambda kv: (_recipe_order(kv[0][0]), kv[0][1:])
  ):
    by_target = {r["nfe_target"]: r for r in cells}
    out = []
    for n in nfes:
      r = by_target.get(n)
      if r is None:
        out.append("—")
      elif r.get("error"):
        out.append("error")
      else:
        main = _fmt(r.get(metric), 2 if part == "digits" else 3)
        sub = _fmt(r.get(extra)) if part == "digits" else _sci(r.get(extra))
        tag = f" ({r['nfe']})" if r["nfe"] != n else ""
        out.append(f"{main} / {sub}{tag}")
    lines.append(
      f"| {LABELS.get(recipe, recipe)} | {sampler} | {_grid_name(recipe, cells[0]['grid'])} | "
      + " | ".join(out)
      + " |"
    )
  return "\n".join(lines)


def _is_few_step(recipe: str) -> bool:
  return any(recipe in recipes for recipes in FEW_STEP.values())


def few_step_table(rows: list[dict]) -> str:
  """Fréchet / class accuracy of the one- and two-step recipes at 1 and 2 NFE."""
  head = "| recipe | sampler | " + " | ".join(f"NFE {n}" for n in FEW_STEP_NFE) + " | trained |"
  lines = [head, "|" + "---|" * (3 + len(FEW_STEP_NFE))]
  groups = {}
  for r in rows:
    groups.setdefault((r["recipe"], r["sampler"]), {})[r["nfe"]] = r
  for (recipe, sampler), by_nfe in sorted(groups.items(), key=lambda kv: _recipe_order(kv[0][0])):
    cells = []
    for n in FEW_STEP_NFE:
      r = by_nfe.get(n)
      cells.append(
        "—"
        if r is None
        else "error"
        if r.get("error")
        else f"{_fmt(r.get('frechet'))} / {_fmt(r.get('class_accuracy'))}"
      )
    any_row = next(iter(by_nfe.values()))
    trained = f"{any_row.get('train_steps')} steps, {_fmt(any_row.get('train_step_s'), 0)} s in steps"
    lines.append(f"| {LABELS.get(recipe, recipe)} | {sampler} | " + " | ".join(cells) + f" | {trained} |")
  return "\n".join(lines)


def _recipe_order(recipe: str) -> int:
  order = ["digits", "digits_edm", "digits_flow", "toy2d", "toy2d_flow", *FEW_STEP["digits"]]
  return order.index(recipe) if recipe in order else 99


def plot(rows: list[dict], part: str, path: str) -> None:
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  from matplotlib.ticker import FixedLocator, NullFormatter, NullLocator, ScalarFormatter

  colors = {
    "ddim": "C0", "euler": "C0", "heun": "C1", "dpmpp_2m": "C2", "dpmpp_3m": "C3", "unipc": "C4",
    "meanflow": "C5", "shortcut": "C6", "consistency": "C9",
  }  # fmt: skip
  styles = {0: ("-", "o"), 1: ("--", "s"), 2: (":", "^")}
  if part == "digits":
    panels = [
      ("frechet", "Fréchet distance (judge features) ↓", True, 30.0),
      ("class_accuracy", "class accuracy ↑", False, -0.85),
    ]
  else:
    panels = [("swd", "sliced Wasserstein-2 ↓", True, None), ("mmd", "MMD² (RBF) ↓", True, None)]
  fig, axes = plt.subplots(1, len(panels), figsize=(15, 5.6))
  recipes = sorted({r["recipe"] for r in rows}, key=_recipe_order)
  handles = {}
  for ax, (metric, label, logy, cap) in zip(axes, panels):
    for (recipe, sampler), cells in sorted(
      _series(rows).items(), key=lambda kv: (_recipe_order(kv[0][0]), kv[0][1])
    ):
      pts = [
        (r["nfe"], r.get(metric)) for r in cells if r.get(metric) is not None and math.isfinite(r[metric])
      ]
      if not pts:
        continue
      ls, mk = styles[recipes.index(recipe) % 3]
      color = colors.get(sampler, "k")
      # cap > 0: an upper bound of the axis; cap < 0: a lower bound (-cap)
      shown = [(x, (min(y, cap) if cap > 0 else max(y, -cap)) if cap else y) for x, y in pts]
      (line,) = ax.plot(*zip(*shown), ls=ls, marker=mk, color=color, lw=1.6, ms=5)
      handles[f"{LABELS.get(recipe, recipe)} · {sampler}"] = line
      for x, y in pts:
        if cap and (y > cap if cap > 0 else y < -cap):  # off the scale: a triangle at the edge, the value
          edge, up = abs(cap), cap > 0
          ax.annotate(
            f"{y:.3g}",
            (x, edge),
            xytext=(5, -10 if up else 4),
            textcoords="offset points",
            fontsize=7.5,
            color=color,
          )
          ax.plot([x], [edge], marker="^" if up else "v", color=color, ms=8)
    ref = next(
      (r.get(f"{metric}_real_heldout") for r in rows if r.get(f"{metric}_real_heldout") is not None), None
    )
    if ref is not None and (not logy or ref > 0):
      line = ax.axhline(ref, color="k", lw=1.4, ls="-.")
      handles.setdefault(f"real held-out, {metric} ({_fmt(ref, 3 if ref < 0.1 else 2)})", line)
      if part == "digits" and metric == "frechet":
        line2 = ax.axhline(2 * ref, color="0.5", lw=1.0, ls=(0, (1, 3)))
        handles.setdefault(f"2 x real held-out ({_fmt(2 * ref)})", line2)
    ax.set_xscale("log")
    ticks = [1, 2, 5, 10, 20, 50] if any(_is_few_step(r["recipe"]) for r in rows) else [5, 10, 20, 50]
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_locator(NullLocator())
    if logy:
      ax.set_yscale("log")
      if part == "digits":
        ax.yaxis.set_major_locator(FixedLocator([1, 1.5, 2, 3, 5, 10, 20, 30]))
        ax.yaxis.set_major_formatter(ScalarFormatter())
        ax.yaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("network evaluations (NFE; heun: 2n - 1)")
    ax.set_ylabel(label)
    ax.grid(True, which="major", alpha=0.3)
  fig.legend(list(handles.values()), list(handles.keys()), loc="center right", fontsize=8.5, frameon=False)
  title = "digits (8x8), 1000 samples each" if part == "digits" else "S-curve, 2000 points each"
  note = "; off-scale values drawn at the edge (triangles)" if part == "digits" else ""
  fig.suptitle(f"Few-step frontier, {title}. Line style = recipe, colour = sampler{note}")
  fig.tight_layout(rect=(0, 0, 0.83, 1))
  os.makedirs(os.path.dirname(path), exist_ok=True)
  fig.savefig(path, dpi=110)
  plt.close(fig)
  print(f"[frontier] wrote {path}", flush=True)


def report(args, part: str) -> None:
  _, _, results_name, figure = PARTS[part]
  rows = load_rows(os.path.join(args.results, results_name))
  if not rows:
    return
  grid_rows = [r for r in rows if r["recipe"] in DDPM_RECIPES and r["nfe_target"] == 10]
  few_rows = [r for r in rows if _is_few_step(r["recipe"])]
  main_rows = _frontier_rows([r for r in rows if not _is_few_step(r["recipe"])])
  nfes = [int(n) for n in args.nfe.split(",") if n]
  print(
    f"\n### {part}: metric / {'class accuracy' if part == 'digits' else 'MMD²'} "
    "(heun's actual NFE in brackets)\n"
  )
  print(markdown_table(main_rows, part, nfes))
  if few_rows:
    print("\nOne- and two-step recipes, Fréchet / class accuracy at 1 and 2 NFE:\n")
    print(few_step_table(few_rows))
  if len({r["grid"] for r in grid_rows}) > 1:
    print("\nDDPM spacing test at 10 NFE (the kept spacing is the one with the full row above):\n")
    print(markdown_table(grid_rows, part, [10], by_grid=True))
  print(
    "\nTraining: "
    + ", ".join(
      f"{r} {_fmt(next((x.get('train_wall_s') for x in main_rows if x['recipe'] == r), None), 0)} s wall "
      f"({next((x.get('train_step_s') for x in main_rows if x['recipe'] == r), None)} s in steps)"
      for r in sorted({x["recipe"] for x in main_rows}, key=_recipe_order)
    )
  )
  base = os.path.join(args.results, results_name[: -len(".jsonl")])
  repeats = load_rows(base + "_repeats.jsonl")
  if repeats and part == "digits":
    print("\nRepeats with other sampling seeds (Fréchet; seed 0 is the table above):\n")
    print(repeats_table(rows, repeats))
  have = {(r["recipe"], r["sampler"], r["grid"], r["num_steps"]) for r in rows}
  probes = [
    r
    for r in load_rows(base + "_probes.jsonl")
    if (r["recipe"], r["sampler"], r["grid"], r["num_steps"]) not in have
  ]
  if probes:
    print("\nProbes (extra cells, seed 0):\n")
    print(markdown_table(probes, part, sorted({r["nfe_target"] for r in probes})))
  plot(main_rows + few_rows, part, os.path.join(args.figures, figure))


def main(argv=None) -> int:
  args = _parser().parse_args(argv)
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  if args.out and not args.tiny:
    raise SystemExit(
      "--out is the folder of a --tiny run; a full run writes to --runs, --results and --figures"
    )
  if args.tiny:
    apply_tiny(args)
  parts = [p for p in args.part.split(",") if p]
  for part in parts:
    if part not in PARTS:
      raise SystemExit(f"--part: {part!r} is not one of {sorted(PARTS)}")
  if not args.plots_only:
    for part in parts:
      run_part(args, part)
  for part in parts:
    report(args, part)
  return 0


if __name__ == "__main__":
  sys.exit(main())
