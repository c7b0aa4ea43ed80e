"""The notebook path: `jaxdiff.load(workdir)` gives the checkpoint's weights, samples as sample.py
does, and the README's five-line notebook snippet runs; NNX modules plug in through `bind`."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from helpers import tiny_points_config

import jaxdiff
from jaxdiff import config_sampling
from jaxdiff.errors import SamplingError
from jaxdiff.training import train

pytestmark = pytest.mark.usefixtures("fast_compiles")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """A 20-step MLP run on the S-curve (checkpoints at 10 and 20) and its final TrainState."""
  workdir = str(tmp_path_factory.mktemp("nb") / "toy2d")
  state = train(tiny_points_config(20), workdir)
  return workdir, jax.device_get(state)


def _equal_trees(a, b) -> bool:
  la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
  return len(la) == len(lb) and all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(la, lb))


def test_load_gives_the_checkpoints_weights_wrapped_for_apply(trained):
  workdir, state = trained
  run = jaxdiff.load(workdir)
  assert run.step == 20 and set(run.variables) == {"params"}
  assert _equal_trees(run.params, state.ema_params)  # EMA by default
  assert not _equal_trees(run.params, state.params)  # ... which are not the raw weights (decay 0.9)
  assert _equal_trees(jaxdiff.load(workdir, params="raw").params, state.params)
  older = jaxdiff.load(workdir, step=10)
  assert older.step == 10 and not _equal_trees(older.params, run.params)
  # the variables go straight into apply: the network output on a batch
  x, t = jnp.ones((3, 2)), jnp.full((3,), 5.0)
  assert run.model.apply(run.variables, x, t).shape == (3, 2)


def test_load_refuses_missing_workdir_and_step(trained, tmp_path):
  workdir, _ = trained
  with pytest.raises(SamplingError, match="no such folder"):
    jaxdiff.load(str(tmp_path / "nothing"))
  with pytest.raises(SamplingError, match="no such checkpoint"):
    jaxdiff.load(workdir, step=7)


def test_sample_matches_sample_from_config_and_the_functional_api(trained):
  workdir, _ = trained
  run = jaxdiff.load(workdir)
  key = jax.random.key(3)
  x = run.sample(key, 8, sampler="ddim", num_steps=6)
  ref = config_sampling.sample_from_config(
    run.config, run.model, run.process, run.params, key, 8, sampler="ddim", num_steps=6
  )
  np.testing.assert_array_equal(np.asarray(x), np.asarray(ref))
  # the same draw through jaxdiff.sample with the bound variables (the config's grid is the leading spacing)
  manual = jaxdiff.sample(
    jaxdiff.bind(run.model.apply, run.variables),
    run.process,
    (8, *run.shape),
    key,
    sampler="ddim",
    num_steps=6,
    prediction=run.config.diffusion.prediction,
    spacing=run.config.sample.spacing,
  )
  np.testing.assert_allclose(np.asarray(x), np.asarray(manual), rtol=1e-6, atol=1e-6)
  assert x.shape == (8, 2) and np.all(np.isfinite(np.asarray(x)))


def _readme_block(title: str) -> str:
  from helpers import documented_text

  text = documented_text()  # README.md and the guides (docs/guides/functional-api.md)
  m = re.search(rf"### {re.escape(title)}\s+```python\n(.*?)```", text, re.S)
  assert m, f"README.md has no python block under '### {title}'"
  return m.group(1)


def test_readme_notebook_snippet_runs(trained):
  workdir, state = trained
  block = _readme_block("In a notebook: `jaxdiff.load`")
  assert len(block.strip().splitlines()) <= 5
  assert '"runs/toy2d"' in block
  scope: dict = {}
  exec(compile(block.replace('"runs/toy2d"', repr(workdir)), "README.md", "exec"), scope)
  run = scope["run"]
  assert _equal_trees(run.params, state.ema_params)
  x, x2 = np.asarray(scope["x"]), np.asarray(scope["x2"])
  assert x.shape == x2.shape and x.shape[1:] == (2,) and np.all(np.isfinite(x))
  np.testing.assert_allclose(x, x2, rtol=1e-6, atol=1e-6)  # run.sample == jaxdiff.sample with bind


class _NNXMLP(nnx.Module):
  def __init__(self, rngs: nnx.Rngs):
    self.inp = nnx.Linear(3, 16, rngs=rngs)
    self.out = nnx.Linear(16, 2, rngs=rngs)

  def __call__(self, x, t):
    h = jnp.concatenate([x, (t[:, None] / 1000.0).astype(x.dtype)], axis=-1)
    return self.out(jax.nn.silu(self.inp(h)))


def test_nnx_module_through_bind_split_merge():
  """The README's NNX recipe: same draw as calling the module directly, one compile for new states."""
  module = _NNXMLP(nnx.Rngs(0))
  graphdef, state = nnx.split(module)
  traces = []

  def apply(state, x, t, **cond):
    traces.append(1)
    return nnx.merge(graphdef, state)(x, t, **cond)

  schedule = jaxdiff.schedules.linear(100)
  key, shape = jax.random.key(0), (5, 2)
  opts = dict(sampler="ddim", num_steps=4, prediction="eps")
  x = jaxdiff.sample(jaxdiff.bind(apply, state), schedule, shape, key, **opts)
  direct = jaxdiff.sample(lambda x, t: module(x, t), schedule, shape, key, **opts)
  np.testing.assert_allclose(np.asarray(x), np.asarray(direct), rtol=1e-6, atol=1e-6)
  n = len(traces)
  state2 = jax.tree_util.tree_map(lambda a: a * 0.5, state)
  x2 = jaxdiff.sample(jaxdiff.bind(apply, state2), schedule, shape, key, **opts)
  assert len(traces) == n  # new parameters, no new trace
  module2 = nnx.merge(graphdef, state2)
  direct2 = jaxdiff.sample(lambda x, t: module2(x, t), schedule, shape, key, **opts)
  np.testing.assert_allclose(np.asarray(x2), np.asarray(direct2), rtol=1e-6, atol=1e-6)
  assert not np.allclose(np.asarray(x2), np.asarray(x))
