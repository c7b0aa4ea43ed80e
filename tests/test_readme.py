"""The README's five-line functional example runs as written; the README fits on a screen and its
links lead somewhere (everything else moved into the documentation site, docs/, whose code
tests/test_guides.py runs)."""

import os
import re

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAX_LINES = 200


def _readme() -> str:
  return open(os.path.join(ROOT, "README.md")).read()


def test_readme_functional_example_runs():
  block = re.search(r"## The functional API in five lines\s+```python\n(.*?)```", _readme(), re.S).group(1)
  assert len(block.strip().splitlines()) <= 6
  scope: dict = {}
  exec(compile(block, "README.md", "exec"), scope)
  assert scope["x"].shape == (16, 2) and np.all(np.isfinite(np.asarray(scope["x"])))
  assert np.isfinite(float(scope["loss"])) and "loss_q0" in scope["metrics"]


def test_readme_is_short_and_starts_with_the_two_commands():
  text = _readme()
  assert len(text.splitlines()) <= MAX_LINES
  sections = re.findall(r"^## (.+)$", text, re.M)
  assert sections[0] == "Two commands" and "make demo" in text and "make test" in text


def test_readme_links_lead_to_files_and_guide_sections():
  text = _readme()
  links = re.findall(r"\]\(([^)\s]+)\)", text)
  assert any(link.startswith("docs/guides/") for link in links)
  for link in links:
    if "://" in link:
      continue
    path, _, anchor = link.partition("#")
    assert os.path.exists(os.path.join(ROOT, path)), f"README links to missing {path}"
    if anchor and path.endswith(".md"):
      headings = re.findall(r"^#+ (.+)$", open(os.path.join(ROOT, path)).read(), re.M)
      slugs = {re.sub(r"[^\w\- ]", "", h).strip().lower().replace(" ", "-") for h in headings}
      assert anchor in slugs, f"README links to {link}: no such heading"
