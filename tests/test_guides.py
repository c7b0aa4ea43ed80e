"""The documentation's code runs: every ```python block of docs/guides/*.md, and every notebook of
notebooks/ top to bottom at its tiny size (JAXDIFF_NOTEBOOK_TINY=1, as the site build runs them).

A guide's blocks run in order in one namespace (a later block may use what an earlier one made),
in a fresh folder. A block that opens a folder the guides name (a training workdir such as
`"runs/toy2d"`, a downloaded diffusers model) gets a small stand-in made here (a tiny training run
of that recipe, a random-weight model), its path put in place of the name. The site itself is
built by `make docs` (CI), not here: it executes the notebooks again and takes minutes.
"""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys

import helpers
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
GUIDES = sorted((ROOT / "docs" / "guides").glob("*.md"))
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.py"))
NOTEBOOK_TIMEOUT_S = 900
_BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


# Folders the guides' code opens (training workdirs, a downloaded diffusers model), each made here
# small: a tiny training run of the recipe's kind, a random-weight UNet in diffusers' layout.
def _train(config):
  def make(path: str) -> None:
    from jaxdiff.training import train

    train(config(), path)

  return make


def _diffusers_unet(path: str) -> None:
  """A small UNet2DModel folder in the DDPM CIFAR-10 layout (32x32x3, attention at 16x16)."""
  import jax
  import jax.numpy as jnp

  from jaxdiff.interop import save_diffusers_unet, unet_model_config
  from jaxdiff.models import create_model

  layout = {
    "_class_name": "UNet2DModel", "sample_size": 32, "in_channels": 3, "out_channels": 3,
    "block_out_channels": [16, 32], "layers_per_block": 1, "norm_num_groups": 8,
    "down_block_types": ["DownBlock2D", "AttnDownBlock2D"], "up_block_types": ["AttnUpBlock2D", "UpBlock2D"],
  }  # fmt: skip
  model = create_model({"model": unet_model_config(layout)})
  variables = model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)), jnp.zeros(1, jnp.int32))
  save_diffusers_unet(model, variables, path, sample_size=32)


FOLDERS = {
  '"runs/toy2d"': _train(lambda: helpers.tiny_points_config(num_steps=10)),
  '"runs/frontier/digits"': _train(lambda: helpers.tiny_image_config(num_steps=10)),
  '"ddpm-cifar10-32/unet"': _diffusers_unet,
}


def python_blocks(path: pathlib.Path) -> list[tuple[int, str]]:
  """(line number, code) of every ```python block in a Markdown file, in order."""
  text = path.read_text()
  return [(text.count("\n", 0, m.start()) + 2, m.group(1)) for m in _BLOCK.finditer(text)]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
  """quoted name -> path of its stand-in, made on first use."""
  made: dict[str, str] = {}

  def get(name: str) -> str:
    if name not in made:
      path = str(tmp_path_factory.mktemp("guide_folder") / "made")
      FOLDERS[name](path)
      made[name] = path
    return made[name]

  return get


def test_every_guide_is_linked_from_the_front_page():
  index = (ROOT / "docs" / "index.md").read_text()
  missing = [p.name for p in GUIDES if f"guides/{p.name}" not in index]
  assert GUIDES and not missing, f"docs/index.md does not link {missing}"


def test_python_blocks_are_found_with_their_line_numbers(tmp_path):
  page = tmp_path / "page.md"
  page.write_text("# t\n\n```python\nx = 1\n```\n\n```bash\nls\n```\n```python\ny = x + 1\n```\n")
  assert python_blocks(page) == [(4, "x = 1\n"), (11, "y = x + 1\n")]


@pytest.mark.parametrize("guide", GUIDES, ids=lambda p: p.stem)
def test_guide_code_blocks_run(guide, folders, tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  monkeypatch.setenv("MPLBACKEND", "Agg")
  scope: dict = {"__name__": f"guide_{guide.stem}"}
  for line, code in python_blocks(guide):
    for name in FOLDERS:
      if name in code:
        code = code.replace(name, repr(folders(name)))
    # blank lines up to the block keep tracebacks pointing at the guide's own line numbers; the block
    # is compiled as a reader's file would be, without this module's `from __future__` flags
    exec(compile("\n" * (line - 1) + code, str(guide), "exec", dont_inherit=True), scope)


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_at_tiny_size(notebook, tmp_path):
  env = {**os.environ, "JAXDIFF_NOTEBOOK_TINY": "1", "MPLBACKEND": "Agg", "PYTHONPATH": str(ROOT)}
  env.pop("JAXDIFF_NOTEBOOK_WORKDIR", None)
  proc = subprocess.run(
    [sys.executable, str(notebook)], cwd=tmp_path, env=env, capture_output=True, text=True,
    timeout=NOTEBOOK_TIMEOUT_S,
  )  # fmt: skip
  assert proc.returncode == 0, f"{notebook.name} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"


def test_notebooks_are_jupytext_percent_files_with_a_tiny_mode():
  assert len(NOTEBOOKS) >= 3
  for nb in NOTEBOOKS:
    text = nb.read_text()
    assert "format_name: percent" in text and "# %%" in text, nb.name
    assert 'os.environ.get("JAXDIFF_NOTEBOOK_TINY"' in text, f"{nb.name} has no tiny mode"
