"""Markdown tables from benchmarks/results/*.jsonl: the latest record of each row (optionally
only records with a given --tag), for pasting into BENCHMARKS.md.

    python benchmarks/report.py [--tag=main]
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402


def load(kind: str, tag: str | None) -> list[dict]:
  path = common.RESULTS / f"{kind}.jsonl"
  if not path.exists():
    return []
  recs = [json.loads(line) for line in open(path) if line.strip()]
  return [r for r in recs if tag is None or r.get("tag") == tag]


def latest(recs: list[dict], key: str) -> dict:
  out = {}
  for r in recs:
    out[r[key]] = r
  return out


def f(x, nd=3):
  if x is None or x != x:
    return "–"
  return f"{x:.{nd}g}" if abs(x) < 1000 else f"{x:.0f}"


def first_load(text: str) -> str:
  """The 1-minute load of a recorded loadavg ("['0.52', '0.40', '0.31']", as common.load_average
  writes it, or a plain value): parsed as a literal, never evaluated (a results file is data)."""
  if not text.startswith("["):
    return text
  try:
    value = ast.literal_eval(text)
  except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
    return "?"
  ok = isinstance(value, (list, tuple)) and value and isinstance(value[0], (str, int, float))
  return str(value[0]) if ok else "?"


def main(argv=None):
  p = argparse.ArgumentParser()
  p.add_argument("--tag", default=None)
  args = p.parse_args(argv)
  train = latest(load("train", args.tag), "network")
  ddim = latest(load("sample", args.tag), "network")
  # cold/warm first-step records (bench_compile.py's other benches, e.g. compile_overlap, have their own shape)
  comp = latest([r for r in load("compile", args.tag) if "cold" in r and "warm" in r], "row")
  mlp = latest(load("mlp", args.tag), "batch")

  print(
    "| network | params jaxdiff / diffusers | train img/s jaxdiff | diffusers | ratio | "
    "jaxdiff GFLOP/s (% peak) | diffusers GFLOP/s (% peak) | DDIM-50 s jaxdiff | diffusers | "
    "speed-up | compile cold / warm s | peak RSS MB jaxdiff / diffusers | load (1 min) |"
  )
  print("|" + "---|" * 13)
  for name in ("tiny", "small", "cifar10"):
    t, s, c = train.get(name), ddim.get(name), comp.get(name)
    cells = [name]
    if t:
      peak = t["matmul_peak"]["peak"]
      cells += [
        f"{t['jax_params'] / 1e6:.2f}M / {t.get('torch_params', 0) / 1e6:.2f}M",
        f"{f(t['jax_images_per_s'])} (b{t['batch']})",
        f"{f(t.get('torch_images_per_s'))} ({t.get('torch_best', '')})",
        f"**{f(t.get('ratio'), 2)}×**",
        f"{f(t['jax_gflops'])} ({100 * t['jax_gflops'] / peak:.0f} %)",
        f"{f(t.get('torch_gflops'))} ({100 * t.get('torch_gflops', 0) / peak:.0f} %)",
      ]
    else:
      cells += ["–"] * 6
    if s:
      cells += [
        f"{f(s['jax_s'])} (b{s['batch']})",
        f"{f(s.get('torch_s'))} ({s.get('torch_best', '')})",
        f"**{f(s.get('speedup'), 2)}×**",
      ]
    else:
      cells += ["–"] * 3
    if c:
      tm = c.get("torch") or {}
      cells += [
        f"{f(c['cold']['first_step_s'])} / {f(c['warm']['first_step_s'])}",
        f"{c['warm']['peak_rss_mb']:.0f} / {tm.get('peak_rss_mb', float('nan')):.0f}",
      ]
    else:
      cells += ["–", "–"]
    loads = [r["env"]["loadavg"] for r in (t, s) if r] + ([c["loadavg"]] if c else [])
    cells.append(", ".join(first_load(str(x)) for x in loads))
    print("| " + " | ".join(cells) + " |")
  if "default" in comp:
    c = comp["default"]
    print(
      f"\nDefault config (configs/default.py, batch {c['cold']['batch']}): first step "
      f"{f(c['cold']['first_step_s'])} s cold (compile {f(c['cold']['compile_s'])} s), "
      f"{f(c['warm']['first_step_s'])} s warm (compile {f(c['warm']['compile_s'])} s)."
    )
  opts = load("options", args.tag)
  if opts:
    print(
      "\n| network | benchmark | XLA default s | jaxdiff options s | speed-up | diffusers s | "
      "jaxdiff/diffusers speed: XLA default → jaxdiff options |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in opts:
      med, anchor = r["medians"], r.get("anchor")
      arms = list(r["options"])
      if len(arms) < 2:
        continue
      a, b = med[arms[0]], med[arms[1]]
      peer = med.get(anchor) if anchor else None
      vs = f"{f(peer / a, 2)}× → {f(peer / b, 2)}×" if peer else "–"
      label = "train step" if r["what"] == "train" else "DDIM-50"
      print(
        f"| {r['row']} | {label} (b{r['batch']}) | {f(a)} | {f(b)} | **{f(a / b, 3)}×** | "
        f"{f(peer) if peer else '–'} ({anchor}) | {vs} |"
      )
  if mlp:
    print("\n| 2-D MLP, DDPM 1000 steps | jaxdiff s | torch eager s | speed-up | jaxdiff first call s |")
    print("|---|---|---|---|---|")
    for b, r in sorted(mlp.items()):
      print(
        f"| batch {b} | {f(r['jax_s'])} | {f(r['torch_s'])} ({r['torch_best']}) | "
        f"**{f(r['speedup'], 3)}×** | {f(r['jax_first_call_s'])} |"
      )


if __name__ == "__main__":
  main()
