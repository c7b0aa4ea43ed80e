"""The README's five-line functional example runs as written."""

import os
import re

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_readme_functional_example_runs():
  text = open(os.path.join(ROOT, "README.md")).read()
  block = re.search(r"## The functional API in five lines\s+```python\n(.*?)```", text, re.S).group(1)
  assert len(block.strip().splitlines()) <= 6
  scope: dict = {}
  exec(compile(block, "README.md", "exec"), scope)
  assert scope["x"].shape == (16, 2) and np.all(np.isfinite(np.asarray(scope["x"])))
  assert np.isfinite(float(scope["loss"])) and "loss_q0" in scope["metrics"]
