"""Every process through the ordinary commands: config -> train (resume) -> sample.py, and the
config checks that tie a process to its fields."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from helpers import ROOT, load_config_file, tiny_image_config, tiny_points_config

from jaxdiff import processes
from jaxdiff.bulk import generate, read_shard
from jaxdiff.config_utils import ConfigError, process_from_config, validate_config
from jaxdiff.models import create_model
from jaxdiff.training import Checkpointer, train

PROCESS_SETTINGS = {
  "vpsde": {"prediction": "eps"},
  "cosine": {"prediction": "v"},
  "edm": {"prediction": "edm", "weighting": "edm"},
  "flow": {"prediction": "flow", "time_sampling": "logit_normal"},
}


def _points(process: str, num_steps: int = 10):
  c = tiny_points_config(num_steps=num_steps)
  c.diffusion.process = process
  for k, v in PROCESS_SETTINGS[process].items():
    c.diffusion[k] = v
  c.sample.num_steps = 4
  return c


def _leaves(tree):
  return [np.asarray(x) for x in jax.tree_util.tree_leaves(tree)]


@pytest.mark.parametrize("process", sorted(PROCESS_SETTINGS))
def test_process_trains_and_samples(process, tmp_path):
  c = _points(process)
  validate_config(c)
  assert type(process_from_config(c)) is processes.PROCESSES[process]
  state = train(c, str(tmp_path / "w"))
  assert int(state.step) == 10
  saved = json.load(open(tmp_path / "w" / "config.json"))
  assert saved["diffusion"]["process"] == process
  grid = {"flow": "flow", "edm": "karras"}.get(process, "logsnr")
  s = generate(
    str(tmp_path / "w"),
    str(tmp_path / "out"),
    num_samples=6,
    sampler="dpmpp_2m",
    grid_options={"grid": grid},
    progress=False,
  )
  assert s["files_present"] == 1
  x = read_shard(os.path.join(tmp_path / "out", s["files"][0]))["points"]
  assert x.shape == (6, 2) and np.all(np.isfinite(x))


def test_edm_resume_equals_uninterrupted_run(tmp_path):
  straight = train(_points("edm", 20), str(tmp_path / "a"))
  c = _points("edm", 20)
  train(c, str(tmp_path / "b"), stop_at_step=10)
  assert Checkpointer(str(tmp_path / "b")).all_steps() == [10]
  resumed = train(c, str(tmp_path / "b"))
  for a, b in zip(
    _leaves(straight.params) + _leaves(straight.ema_params),
    _leaves(resumed.params) + _leaves(resumed.ema_params),
  ):
    np.testing.assert_array_equal(a, b)


def test_flow_images_through_sample_py_with_grid_flags(tmp_path):
  c = tiny_image_config(num_steps=4)
  c.diffusion.process = "flow"
  c.diffusion.prediction = "flow"
  c.train.checkpoint_every = 4
  c.train.log_every = 2
  wd = str(tmp_path / "w")
  train(c, wd)
  env = dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=ROOT)
  args = [sys.executable, os.path.join(ROOT, "sample.py"), f"--workdir={wd}", "--num_samples=4"]
  ok = subprocess.run(
    args + ["--sampler=heun", "--num_steps=3", "--grid=flow", "--shift=3", f"--output={tmp_path / 'o'}"],
    env=env, capture_output=True, text=True, timeout=300,
  )  # fmt: skip
  assert ok.returncode == 0, ok.stderr[-2000:]
  run = json.load(open(tmp_path / "o" / "run.json"))
  assert run["grid"] == {"grid": "flow", "shift": 3.0} and run["nfe"] == 5
  bad = subprocess.run(
    args + ["--grid=trailing", f"--output={tmp_path / 'bad'}"],
    env=env,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert bad.returncode == 2 and "spacing of discrete chains" in bad.stderr and "Traceback" not in bad.stderr
  assert not os.path.exists(tmp_path / "bad")


@pytest.mark.parametrize(
  "edit,field",
  [
    ({"diffusion.process": "edm", "model.learn_sigma": True}, "model.learn_sigma"),
    ({"diffusion.process": "flow", "sample.grid": "trailing"}, "sample.grid"),
    ({"diffusion.process": "edm", "diffusion.time_sampling": "logit_normal"}, "diffusion.time_sampling"),
    ({"diffusion.process": "flow", "model.time_input": "index"}, "model.time_input"),
    ({"diffusion.process": "ve"}, "diffusion.process"),
    ({"diffusion.process": "edm", "diffusion.sigma_min": 100.0}, "sigma_min"),
  ],
)
def test_invalid_process_combinations_name_the_field(edit, field):
  c = load_config_file("digits")
  for path, value in edit.items():
    section, name = path.split(".")
    c[section][name] = value
  with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
    validate_config(c)


@pytest.mark.parametrize("name", ["digits_edm", "digits_flow", "toy2d_flow", "cifar10_edm", "cifar10_flow"])
def test_recipes_are_valid_and_build(name):
  c = load_config_file(name)
  validate_config(c)
  model = create_model(c)
  assert model.time_input == {"edm": "log_sigma", "flow": "unit"}[c.diffusion.process]
