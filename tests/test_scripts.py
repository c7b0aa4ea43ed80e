"""What the README advertises runs: every script in scripts/ and every shell command shown in README.md
(its ```bash / ```sh blocks, its indented command blocks and its inline `python ...` / `make ...`
commands, `make demo` / `make toy2d` expanded to their Makefile recipes) is run as a user runs it: a
subprocess of this venv's python, in a fresh folder that links the repository's CLIs, configs and
scripts, with tiny settings (2 training steps of a small network, 20 samples, 3 sampler steps) and
checks of the exit status and of the files the command is documented to write.

A README command that no longer runs fails here, and so does one this file does not know how to make
tiny: add it to SKIPS with the reason, or teach `tiny()` its settings. `python -m pytest
tests/test_scripts.py` runs the `make demo` chain (train.py -> sample.py -> python -m
jaxdiff.evaluation, then the inpainting demo on that workdir), the toy2d chain, the judge script and
the cheap commands; `-m slow` runs the rest (the README's walkthroughs per workdir and each
conditioning demo training its own model).
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import re
import shlex
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
MAKEFILE = ROOT / "Makefile"
# What a command's working folder links from the repository (README commands use these relative paths).
LINKED = ("train.py", "sample.py", "configs", "scripts", "benchmarks", "jaxdiff")
# per command; JAXDIFF_TEST_TIMEOUT_S raises it on a machine shared with other work
TIMEOUT_S = int(os.environ.get("JAXDIFF_TEST_TIMEOUT_S", "300"))
# Commands that are several runs in one (benchmarks/frontier.py --tiny trains two models, samples and scores
# four cells) get a multiple of TIMEOUT_S.
TIMEOUT_FACTOR = {"benchmarks/frontier.py": 3}

# Tiny settings. Training: 2 steps at batch 16 of an 8-channel UNet (or a 32-wide MLP for the 2-D
# configs), one sample grid at the end, no compilation cache; sampling: 3 steps.
TINY_TRAIN = {
  "train.num_steps": "2",
  "train.batch_size": "16",
  "train.log_every": "1",
  "train.checkpoint_every": "2",
  "train.sample_every": "2",
  "train.num_sample_images": "20",
  "train.compilation_cache_dir": "none",
  "optim.warmup_steps": "0",
  "sample.num_steps": "3",
}
TINY_UNET = {"model.base_channels": "8", "model.num_heads": "1", "model.num_groups": "4"}
TINY_MLP = {"model.hidden_dim": "32", "model.num_layers": "2"}
MLP_CONFIGS = ("toy2d",)  # configs/<name>.py whose network is the MLP
TINY_SAMPLES = 20
TINY_SAMPLER_STEPS = 3
# README placeholders (`--sampler=S --num_steps=N --guidance_scale=G --output=DIR` after a digits_edm
# command, `--workdir=W` of a trained workdir, `configs/<name>.py`).
PLACEHOLDERS = {"S": "ddim", "N": "3", "G": "2", "DIR": "runs/digits_edm/readme_samples", "W": "runs/digits"}
NAME_PLACEHOLDER = ("<name>", "digits")

# Commands that are not run, each with the reason (matched against the command as the README writes it).
SKIPS = [
  (r"^make$", "names the tool in prose"),
  (r"^python -m jaxdiff\.evaluation$", "names the CLI in prose (its commands are in the Evaluation section)"),
  (r"^python -m jaxdiff\.interop import$", "names the CLI in prose (its commands are in diffusers interop)"),
  (r"(^|/)pip |-m venv", "installs packages (network); the tests run inside the installed venv"),
  (r"^tfds ", "downloads a TFDS data set (network)"),
  (r"^gcloud ", "needs a Cloud TPU VM / bucket"),
  (r"gs://", "needs a Cloud Storage bucket (tests/test_paths.py runs a workdir on fsspec's in-memory store)"),
  (r"-m pytest|^make (test|test-slow|test-all)$", "the test suite itself"),
  (
    r"--dataset=fid|jaxdiff\.evaluation\.inception|jaxdiff\.evaluation\.fid_stats",
    "needs the FID Inception weights (a download) and TFDS CIFAR-10; --help is checked",
  ),
  (
    r"^make (bench|lint|format|clean|setup|docs)$",
    "not a demo: benchmarks take hours; lint/format/clean/docs are tooling (CI runs make docs: .ci/run)",
  ),
  (
    r"configs/(cifar10|celeba64|mnist)\.py",
    "full-size training on TFDS data (not available offline); train.py is covered by the digits chain",
  ),
  (
    r"benchmarks/(run_all|bench_\w+|step_breakdown|scaling)\.py",
    "benchmarks take minutes to hours and need torch + diffusers; --help is checked",
  ),
  (
    r"jaxdiff\.samplers\.accuracy --gap_ratio",
    "the accuracy table again with another option (minutes); the table itself is a README command",
  ),
  (
    r"--vae=(SRC|sd-vae)",
    "a pretrained SD-VAE (a download), or the CLI's synopsis with placeholders; --help is checked",
  ),
]
# README commands that fail today for a reason outside this file, each with the fix: the test expects
# them to fail (and fails once they pass, so that the entry is removed).
KNOWN_README_BUGS: list[tuple[str, str]] = []  # (command pattern, why it fails): expected failures
COMMAND_START = re.compile(r"^(\.venv/bin/)?(python3?|pip|make|tfds|gcloud)( |$)")


# ------------------------------------------------------------------------------------------ parsing


def _commands_in_block(block: str) -> list[str]:
  """Shell commands of a code block: continuation lines joined, comments and prompts dropped."""
  out = []
  for line in block.replace("\\\n", " ").splitlines():
    line = re.sub(r"^\s*\$ ", "", line).strip()
    if line and not line.startswith("#"):
      out.append(line)
  return out


def readme_commands(text: str | None = None) -> list[str]:
  """Every shell command README.md shows, in order of appearance."""
  if text is None:  # README.md and the guides of the documentation site, where its sections moved
    from helpers import documented_text

    text = documented_text()
  found: list[tuple[int, str]] = []
  for m in re.finditer(r"^```(bash|sh|shell|console)\n(.*?)^```", text, re.S | re.M):
    found += [(m.start(), c) for c in _commands_in_block(m.group(2))]
  prose = re.sub(r"^```.*?^```", lambda m: " " * len(m.group(0)), text, flags=re.S | re.M)
  for m in re.finditer(r"(?:^\n)((?:^ {4,}\S.*\n)+)", prose, re.M):  # indented code blocks
    found += [(m.start(), c) for c in _commands_in_block(m.group(1)) if COMMAND_START.match(c)]
  prose = re.sub(r"(?:^\n)((?:^ {4,}\S.*\n)+)", lambda m: " " * len(m.group(0)), prose, flags=re.M)
  for m in re.finditer(r"`([^`]+)`", prose):  # inline commands (they may wrap over two lines)
    span = " ".join(m.group(1).split())
    if COMMAND_START.match(span):
      found.append((m.start(), span))
  return [c for _, c in sorted(found, key=lambda pair: pair[0])]


def makefile_recipe(target: str) -> list[str]:
  """The commands of a Makefile target, its variables ($(PY), $(WORKDIR), ...) substituted."""
  text = MAKEFILE.read_text()
  variables = dict(re.findall(r"^(\w+)\s*[?:]?=\s*(.*?)\s*$", text, re.M))
  m = re.search(rf"^{re.escape(target)}:.*\n((?:\t.*\n?)*)", text, re.M)
  assert m, f"Makefile has no target {target!r}"
  recipe = []
  for line in m.group(1).splitlines():
    line = line.strip().lstrip("@")
    for _ in range(5):
      line = re.sub(r"\$\((\w+)\)", lambda v: variables.get(v.group(1), v.group(0)), line)
    recipe.append(line)
  return recipe


@dataclasses.dataclass(frozen=True)
class Command:
  source: str  # as README.md (or the Makefile) writes it
  argv: tuple[str, ...]  # expanded: placeholders filled, options in [...] dropped, $(PY) -> python

  @property
  def script(self) -> str:
    """The python script or `-m module` run, or the program."""
    a = self.argv
    if a[0] != "python":
      return a[0]
    return f"-m {a[2]}" if a[1] == "-m" else a[1]

  def flag(self, name: str) -> str | None:
    for tok in self.argv:
      if tok.startswith(f"--{name}="):
        return tok.split("=", 1)[1]
    return None

  @property
  def workdir(self) -> str | None:
    """The runs/<name> folder the command trains, samples or scores."""
    if self.script == "scripts/demo_conditioning.py":
      return None  # each demo gets its own folder and trains there
    for tok in self.argv:
      m = re.search(r"(runs/[\w.-]+)", tok)
      if m:
        return m.group(1)
    return None


def expand(source: str) -> list[Command]:
  """One README command -> the commands it stands for (`a|b|c` alternatives give one each)."""
  tokens = shlex.split(source, comments=True)
  parts, cur = [], []
  for tok in tokens:
    if tok == "&&":
      parts.append(cur)
      cur = []
    else:
      cur.append(tok)
  parts.append(cur)
  out: list[Command] = []
  for argv in parts:
    if argv and argv[0] == "make" and len(argv) == 2 and argv[1] in ("demo", "toy2d"):
      out += [c for line in makefile_recipe(argv[1]) for c in expand(line)]
      continue
    kept, dropping = [], False
    for tok in argv:
      if tok.startswith("["):
        dropping = True
      if not dropping and tok != "...":
        name, eq, value = tok.partition("=")
        if eq and value in PLACEHOLDERS:
          tok = f"{name}={PLACEHOLDERS[value]}"
        kept.append(tok.replace(*NAME_PLACEHOLDER))
      if dropping and tok.endswith("]"):
        dropping = False
    if kept and re.fullmatch(r"(\S*/)?python3?", kept[0]):
      kept[0] = "python"
    alternatives = [i for i, t in enumerate(kept) if "|" in t and not t.startswith("-")]
    if alternatives:
      i = alternatives[0]
      out += [c for alt in kept[i].split("|") for c in expand(shlex.join(kept[:i] + [alt] + kept[i + 1 :]))]
    elif kept:
      out.append(Command(source, tuple(kept)))
  return out


def skip_reason(source: str) -> str | None:
  command = shlex.join(shlex.split(source, comments=True))
  for pattern, reason in SKIPS:
    if re.search(pattern, command):
      return reason
  return None


def planned() -> tuple[list[Command], list[tuple[str, str]]]:
  """(the README's commands that are run, [(command, reason)] of those that are not)."""
  run, skipped = [], []
  for source in readme_commands():
    reason = skip_reason(source)
    if reason:
      skipped.append((source, reason))
      continue
    for c in expand(source):
      reason = skip_reason(shlex.join(c.argv))
      if reason:
        skipped.append((shlex.join(c.argv), reason))
      else:
        run.append(c)
  return run, skipped


# --------------------------------------------------------------------------------- tiny settings


def _set_flag(argv: list[str], name: str, value: str) -> None:
  for i, tok in enumerate(argv):
    if tok.startswith(f"--{name}="):
      argv[i] = f"--{name}={value}"
      return
  argv.append(f"--{name}={value}")


def tiny(c: Command, ws: pathlib.Path) -> list[str]:
  """The command line to run: the README's, with tiny settings."""
  argv = [sys.executable] + list(c.argv[1:]) if c.argv[0] == "python" else list(c.argv)
  if c.script == "train.py" and not c.flag("config"):
    pass  # resuming a workdir from its config.json: overrides need a config file, and none are needed
  elif c.script == "train.py":
    mlp = any(f"configs/{name}.py" in (c.flag("config") or "") for name in MLP_CONFIGS)
    argv += [f"--config.{k}={v}" for k, v in {**TINY_TRAIN, **(TINY_MLP if mlp else TINY_UNET)}.items()]
  elif c.script == "sample.py":
    n = c.flag("num_samples")
    _set_flag(argv, "num_samples", str(min(int(n), TINY_SAMPLES) if n else TINY_SAMPLES))
    if c.flag("num_steps"):
      _set_flag(argv, "num_steps", str(TINY_SAMPLER_STEPS))
  elif c.script == "scripts/demo_conditioning.py":
    if not c.flag("figures"):
      argv.append(f"--figures={ws / 'docs' / 'figures'}")
    argv += ["--train_steps=2", "--per_caption=1", "--scales=2", "--figure_scale=2", "--sr_samples=1"]
    argv += ["--completions=1", "--num_steps=3", "--resample=2", "--jump=1"]
    argv += [f"--config.{k}={v}" for k, v in {**TINY_TRAIN, **TINY_UNET}.items()]  # the digits configs
  elif c.script == "benchmarks/frontier.py":
    argv += ["--tiny", f"--out={ws / 'frontier_tiny'}"]  # never the repository's results and figures
  elif c.script == "scripts/train_digits_judge.py":
    _set_flag(argv, "out", str(ws / "digits_judge.msgpack"))  # never the shipped weights
    _set_flag(argv, "num_epochs", "1")
    _set_flag(argv, "min_accuracy", "0")
  return argv


def expected_files(c: Command, ws: pathlib.Path) -> list[pathlib.Path]:
  """What the command is documented to write (each must exist afterwards)."""
  wd = c.flag("workdir")
  if c.script == "train.py":
    return [ws / wd / "config.json", ws / wd / "metrics.jsonl", ws / wd / "checkpoints" / "2"]
  if c.script == "sample.py":
    out = ws / (c.flag("output") or os.path.join(wd, "generated"))
    files = [out / "summary.json", out / "run.json", out / f"samples_0000000_{TINY_SAMPLES:07d}.npz"]
    files.append(out / ("scatter.png" if "toy2d" in wd else "grid.png"))
    if "--trajectory" in c.argv:
      files.append(out / "trajectory.png")
    return files
  if c.script == "-m jaxdiff.evaluation":
    return [ws / c.flag("out")] if c.flag("out") else []
  if c.script == "-m jaxdiff.data.preview":
    return [ws / (c.flag("out") or "preview.png")]
  if c.script == "scripts/demo_conditioning.py":
    mode = next(a for a in c.argv[2:] if not a.startswith("-"))
    wd = c.flag("workdir") or f"runs/{DEMO_CONFIGS[mode]}"
    figures = {"context": ["context"], "sr": ["sr", "sr_error"], "inpaint": ["inpaint_top_half"]}[mode]
    return [ws / wd / f"demo_{mode}.json"] + [
      ws / "docs" / "figures" / f"conditioning_{f}.png" for f in figures
    ]
  if c.script == "scripts/train_digits_judge.py":
    return [ws / "digits_judge.msgpack"]
  if c.script == "benchmarks/frontier.py":
    out = ws / "frontier_tiny"
    return [out / "results" / f"frontier_{p}.jsonl" for p in ("digits", "s_curve")] + [
      out / "figures" / f"frontier_{p}.png" for p in ("digits", "s_curve")
    ]
  return []


DEMO_CONFIGS = {"context": "digits_context", "sr": "digits_sr", "inpaint": "digits"}


# --------------------------------------------------------------------------------------- running


def workspace(tmp_path: pathlib.Path) -> pathlib.Path:
  """A folder where the README's relative paths (train.py, configs/, runs/...) work."""
  ws = tmp_path / "ws"
  ws.mkdir()
  for name in LINKED:
    (ws / name).symlink_to(ROOT / name)
  return ws


def env() -> dict[str, str]:
  return {
    **os.environ,
    "JAX_PLATFORMS": "cpu",
    "TF_CPP_MIN_LOG_LEVEL": "3",
    "MPLBACKEND": "Agg",
    # behaviour, not speed, is tested: compile with most XLA optimisations off (seconds saved per run)
    "JAX_DISABLE_MOST_OPTIMIZATIONS": "1",
    "PYTHONPATH": str(ROOT),
  }


def known_bug(c: Command) -> str | None:
  for pattern, reason in KNOWN_README_BUGS:
    if re.search(pattern, " ".join(c.source.split())):
      return reason
  return None


# What a command run here must leave alone (the workspace links benchmarks/ and docs/ is beside it).
REPOSITORY_OUTPUTS = (ROOT / "benchmarks" / "results", ROOT / "docs" / "figures")


def _outputs_state() -> dict[str, tuple[int, int]]:
  return {
    str(p): (p.stat().st_size, p.stat().st_mtime_ns)
    for folder in REPOSITORY_OUTPUTS
    if folder.is_dir()
    for p in folder.iterdir()
  }


def run_command(c: Command, ws: pathlib.Path, check: bool = True) -> str | int:
  argv = tiny(c, ws)
  before = _outputs_state()
  limit = TIMEOUT_S * TIMEOUT_FACTOR.get(c.script, 1)
  try:
    out = subprocess.run(argv, cwd=ws, env=env(), capture_output=True, text=True, timeout=limit)
  except subprocess.TimeoutExpired:
    pytest.fail(f"{c.source!r} ran past {limit} s as {shlex.join(argv)}")
  changed = sorted(set(_outputs_state().items()) ^ set(before.items()))
  assert not changed, f"{c.source!r} wrote into the repository's results or figures: {changed}"
  log = out.stdout + out.stderr
  if not check:
    return out.returncode
  assert out.returncode == 0, (
    f"{c.source!r} failed (exit {out.returncode}) as\n{shlex.join(argv)}\n{log[-4000:]}"
  )
  missing = [str(p.relative_to(ws)) for p in expected_files(c, ws) if not p.exists()]
  assert not missing, f"{c.source!r} did not write {missing}\n{log[-2000:]}"
  return log


def run_all(commands: list[Command], ws: pathlib.Path) -> None:
  """In order, training first (a README section may sample a workdir that another one trains);
  the KNOWN_README_BUGS are expected to fail (xfail at the end), and fail the test once they pass."""
  known = []
  # training first (those naming a config before those resuming a workdir from its config.json), the
  # rest in the order the documentation gives them (an export before the import that reads it)
  for c in sorted(
    commands, key=lambda c: (c.script != "train.py", c.script == "train.py" and c.flag("config") is None)
  ):
    reason = known_bug(c)
    if reason is None:
      run_command(c, ws)
    elif run_command(c, ws, check=False) == 0:
      pytest.fail(f"{c.source!r} runs now: remove it from KNOWN_README_BUGS ({reason})")
    else:
      known.append(reason)
  if known:
    pytest.xfail("; ".join(known))


# ------------------------------------------------------------------------------------- the groups

RUN, SKIPPED = planned()
DEMO_MODES = sorted(DEMO_CONFIGS)


def groups() -> dict[str, list[Command]]:
  """The run commands by what they share: a runs/<name> workdir, else each command alone."""
  out: dict[str, list[Command]] = {}
  for c in RUN:
    if c.script == "scripts/demo_conditioning.py":
      continue  # test_conditioning_demo_trains_then_samples
    key = c.workdir or shlex.join(c.argv)
    group = out.setdefault(key, [])
    if all(c.argv != other.argv for other in group):  # `make demo` and the README share commands
      group.append(c)
  return {key: _writers_first(group) for key, group in out.items()}


def _writers_first(group: list[Command]) -> list[Command]:
  """The group in reading order, except that a command reading --samples=X runs after the
  sample.py that writes --output=X (a guide may name the scoring command before the one that
  samples)."""
  ordered = list(group)
  for c in group:
    src = c.flag("samples")
    writers = [i for i, w in enumerate(ordered) if w.script == "sample.py" and w.flag("output") == src]
    if src and writers and writers[0] > ordered.index(c):
      ordered.remove(c)
      ordered.insert(writers[0], c)  # the writer moved up by one: insert right after it
  return ordered


GROUPS = groups()
# Walkthroughs that start from another one's workdir: the latent model trains in runs/digits_vae's latents.
# The consistency-distillation walkthrough starts from the flow model's workdir (its teacher).
GROUP_NEEDS = {
  "runs/digits_latent": ("runs/digits_vae",),
  "runs/digits_latent_fly": ("runs/digits_vae",),
  "runs/digits_cd": ("runs/digits_flow",),
}
# In the default (non-slow) run; the make demo chain is the test below.
DEFAULT_GROUPS = {
  "runs/toy2d",
  "python -m jaxdiff.data.preview --config=configs/digits.py --out=preview.png",
  "python scripts/train_digits_judge.py",
  "python benchmarks/report.py",
}


def test_readme_is_parsed_and_every_command_is_run_or_skipped_with_a_reason():
  sources = {shlex.join(shlex.split(s, comments=True)) for s in readme_commands()}
  assert "make demo" in sources and "make test" in sources, sources
  scripts = {c.script for c in RUN}
  for needed in ("train.py", "sample.py", "-m jaxdiff.evaluation", "scripts/demo_conditioning.py"):
    assert needed in scripts, (needed, scripts)
  # `make demo` and `make toy2d` are their Makefile recipes
  assert [c.script for c in expand("make demo")] == ["train.py", "sample.py", "-m jaxdiff.evaluation"]
  assert {c.argv[2] for c in RUN if c.script == "scripts/demo_conditioning.py"} == set(DEMO_MODES)
  for c in RUN:
    assert not any(re.search(r"<\w+>|^[A-Z]+$|\.\.\.|[\[\]]", t) for t in c.argv), c
  for source, reason in SKIPPED:
    assert reason, source
  grouped = [c for cs in GROUPS.values() for c in cs]
  demos = [c for c in RUN if c.script == "scripts/demo_conditioning.py"]
  assert {c.argv for c in grouped + demos} == {c.argv for c in RUN}


def test_every_script_is_run_by_a_readme_command():
  scripts = {f"scripts/{p.name}" for p in (ROOT / "scripts").glob("*.py")}
  missing = scripts - {c.script for c in RUN}
  assert not missing, f"scripts that neither the README shows nor this file runs: {sorted(missing)}"


def test_make_demo_chain_and_inpainting_demo(tmp_path):
  """make demo (train.py -> sample.py -> python -m jaxdiff.evaluation, as the Makefile runs them), then
  the inpainting demo on the trained workdir (the figure and JSON path every demo mode shares)."""
  ws = workspace(tmp_path)
  chain = expand("make demo")
  run_all(chain, ws)
  wd = ws / chain[0].flag("workdir")
  assert list((wd / "samples").glob("step_*.png")), "training wrote no sample grid"
  report = ws / chain[-1].flag("out")
  assert '"frechet"' in report.read_text()
  demo = Command("demo", ("python", "scripts/demo_conditioning.py", "inpaint", f"--workdir={wd}"))
  log = run_command(demo, ws)
  assert "no checkpoint in" not in log  # the workdir's checkpoint was used


@pytest.mark.parametrize(
  "key",
  [pytest.param(k, marks=() if k in DEFAULT_GROUPS else pytest.mark.slow) for k in sorted(GROUPS)],
)
def test_readme_commands(key, tmp_path):
  ws = workspace(tmp_path)
  for needed in GROUP_NEEDS.get(key, ()):  # the workdirs this walkthrough starts from, made first
    run_all(GROUPS[needed], ws)
  run_all(GROUPS[key], ws)


@pytest.mark.slow
@pytest.mark.parametrize("mode", DEMO_MODES)
def test_conditioning_demo_trains_then_samples(mode, tmp_path):
  """Each README demo as written (no workdir: it trains its own model first, tiny here)."""
  ws = workspace(tmp_path)
  [c] = [c for c in RUN if c.script == "scripts/demo_conditioning.py" and c.argv[2] == mode]
  log = run_command(c, ws)
  assert "no checkpoint in" in log


def _help_checked() -> list[str]:
  """The python scripts / modules of the skipped commands (not pip, venv or pytest)."""
  out = set()
  for source, _ in SKIPPED:
    for c in expand(source):
      if c.argv[0] == "python" and c.script not in ("-m venv", "-m pytest", "-m pip"):
        out.add(c.script)
  return sorted(out)


@pytest.mark.parametrize("script", _help_checked())
def test_skipped_python_commands_still_start(script):
  """Dry check of the commands too long to run here: they import and print their usage."""
  argv = [sys.executable, *script.split(), "--help"]
  out = subprocess.run(argv, cwd=ROOT, env=env(), capture_output=True, text=True, timeout=TIMEOUT_S)
  log = out.stdout + out.stderr
  # argparse exits 0 after --help, absl apps 1; both print their flags, neither a traceback
  assert out.returncode in (0, 1) and "Traceback" not in log, log[-4000:]
  assert re.search(r"usage:|flags:", log), log[-4000:]
