"""Classifier-free guidance's 2024 options against their definitions, traced sampler options, and the
conditioning errors raised before tracing.

Guidance rescale (Lin et al. 2024), the guidance interval (Kynkaanniemi et al. 2024) and a per-step
scale schedule: identities (scale 1 = conditional, phi = 0 = plain guidance, an empty interval =
conditional, a constant schedule = a scalar scale), a closed form of the rescale on a model with
known outputs, plain guidance against a hand-written one, and options that add no model evaluation and,
left out, no operation.
"""

import json
import os
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import random_params, tiny_image_config, tiny_points_config

import jaxdiff
from jaxdiff import config_sampling, processes, samplers, schedules
from jaxdiff.bulk import generate, read_shard
from jaxdiff.bulk.settings import SamplingError, resolve_run
from jaxdiff.config_utils import validate_config
from jaxdiff.configs import default
from jaxdiff.errors import ConfigError
from jaxdiff.models import create_model
from jaxdiff.training import Checkpointer, create_train_state, save_config

SCHED = schedules.linear(1000)
B = 6
Y = jnp.arange(B) % 3
NULL = jnp.full((B,), 3)
GUIDED = dict(cond={"y": Y}, uncond={"y": NULL})
ALL_SAMPLERS = (
  "ddim",
  "ddpm",
  "euler",
  "euler_ancestral",
  "heun",
  "dpmpp_2m",
  "dpmpp_3m",
  "dpmpp_2m_sde",
  "unipc",
)


def _model(x, t, y=None):
  """A toy class-conditional model (label 3 plays the null class); output depends on x, t and y."""
  tt = jnp.asarray(t, jnp.float32)[:, None] / 1000.0
  return jnp.tanh(x) * (0.5 + 0.2 * tt) + 0.1 * y[:, None].astype(jnp.float32) * (1.0 + x)


def _run(process=SCHED, sampler="ddim", n=8, **kw):
  return np.asarray(
    jaxdiff.sample(_model, process, (B, 2), jax.random.key(0), sampler=sampler, num_steps=n, **kw)
  )


def _close(a, b, tol=1e-5):
  np.testing.assert_allclose(a, b, rtol=tol, atol=tol)


FAST = ("ddim", "heun", "dpmpp_2m")  # one-step, two evaluations per step, multistep; the rest: -m slow


@pytest.mark.parametrize(
  "sampler", [s if s in FAST else pytest.param(s, marks=pytest.mark.slow) for s in ALL_SAMPLERS]
)
def test_identities_on_every_sampler(sampler):
  """scale 1 = conditional (with rescale too); phi = 0 = plain guidance; an interval holding no grid
  time = conditional, one holding all = plain guidance; a constant schedule = that scalar scale."""
  cond = _run(sampler=sampler, cond={"y": Y})
  plain = _run(sampler=sampler, guidance_scale=2.5, **GUIDED)
  _close(_run(sampler=sampler, guidance_scale=1.0, guidance_rescale=0.7, **GUIDED), cond)
  _close(_run(sampler=sampler, guidance_scale=2.5, guidance_rescale=0.0, **GUIDED), plain)
  # leading spacing, 8 steps: grid times 875, 750, ..., 0 (and Heun's / DDIM's landing points)
  # (equal up to float rounding: XLA's kernels for the doubled batch round differently)
  _close(_run(sampler=sampler, guidance_scale=2.5, guidance_interval=(876.0, 999.0), **GUIDED), cond)
  _close(_run(sampler=sampler, guidance_scale=2.5, guidance_interval=(-1.0, 999.0), **GUIDED), plain)
  _close(_run(sampler=sampler, guidance_schedule=jnp.full(8, 2.5), **GUIDED), plain)


@pytest.mark.parametrize(
  "process, prediction",
  [
    (processes.VPSDE(), "v"),
    (processes.CosineVP(), "x0"),
    (processes.EDM(), "edm"),
    (processes.RectifiedFlow(), "flow"),
  ],
)
def test_identities_on_every_process(process, prediction):
  kw = dict(process=process, sampler="dpmpp_2m", prediction=prediction)
  cond = _run(cond={"y": Y}, **kw)
  plain = _run(guidance_scale=3.0, **GUIDED, **kw)
  ts = samplers.plan_grid(process, samplers.make_sampler("dpmpp_2m"), 8).ts
  _close(_run(guidance_scale=1.0, guidance_rescale=1.0, **GUIDED, **kw), cond)
  _close(_run(guidance_scale=3.0, guidance_rescale=0.0, **GUIDED, **kw), plain)
  empty = (float(ts[0]) * 1.01 + 1e-3, float(ts[0]) * 1.02 + 2e-3)  # above the noisiest grid time
  _close(_run(guidance_scale=3.0, guidance_interval=empty, **GUIDED, **kw), cond)
  _close(_run(guidance_schedule=np.full(8, 3.0), **GUIDED, **kw), plain)


def test_interval_is_the_schedule_with_scale_one_outside():
  """Guidance on [lo, hi] only = a schedule holding s at the steps whose time is inside, 1 elsewhere."""
  ts = samplers.plan_grid(SCHED, samplers.make_sampler("dpmpp_2m"), 8).ts
  lo, hi = 200.0, 700.0
  sched = np.where((ts >= lo) & (ts <= hi), 4.0, 1.0)
  assert 0 < (sched == 4.0).sum() < len(ts)
  a = _run(sampler="dpmpp_2m", guidance_scale=4.0, guidance_interval=(lo, hi), **GUIDED)
  b = _run(sampler="dpmpp_2m", guidance_schedule=sched, **GUIDED)
  _close(a, b)
  assert not np.allclose(a, _run(sampler="dpmpp_2m", guidance_scale=4.0, **GUIDED), atol=1e-3)


def test_schedule_step_i_uses_scale_i():
  """A schedule against a Python loop of one-step runs, each with its own scalar scale (Stepper)."""
  scales = np.array([5.0, 1.0, 3.0, 0.5, 2.0, 4.0], np.float32)
  st = samplers.Stepper(
    _model, SCHED, (B, 2), sampler="dpmpp_2m", num_steps=6, guidance_schedule=scales, **GUIDED
  )
  state = st.init(jax.random.key(0))
  for i in range(6):
    one = samplers.Stepper(
      _model, SCHED, (B, 2), sampler="dpmpp_2m", num_steps=6, guidance_scale=float(scales[i]), **GUIDED
    )
    ref = one.step(state, i)
    state = st.step(state, i)
    _close(np.asarray(state.x), np.asarray(ref.x))
  _close(np.asarray(state.x), _run(sampler="dpmpp_2m", n=6, guidance_schedule=scales, **GUIDED))


@pytest.mark.parametrize("phi", [0.0, 0.3, 1.0])
def test_rescale_closed_form(phi):
  """A model with fixed outputs A (cond) and U (uncond): one DDIM step of an x0-model returns the guided
  output itself, g = U + s (A - U), rescaled: phi g std(A)/std(g) + (1 - phi) g, per sample."""
  rng = np.random.default_rng(0)
  A = rng.normal(0.3, 1.5, (B, 4, 4, 2)).astype(np.float32)
  U = rng.normal(-0.2, 0.7, (B, 4, 4, 2)).astype(np.float32)

  def model(x, t, y=None):  # the guided call's batch is [cond; uncond]: rows of A, then rows of U
    n = x.shape[0]
    return jnp.where((y == 3)[:, None, None, None], np.concatenate([U, U])[:n], np.concatenate([A, A])[:n])

  s = 3.0
  for process in (SCHED, processes.EDM(), processes.RectifiedFlow()):
    got = jaxdiff.sample(
      model, process, A.shape, jax.random.key(0), sampler="ddim", num_steps=1, prediction="x0",
      guidance_scale=s, guidance_rescale=phi, **GUIDED,
    )  # fmt: skip
    g = U.astype(np.float64) + s * (A - U)
    ratio = A.std(axis=(1, 2, 3), keepdims=True) / g.std(axis=(1, 2, 3), keepdims=True)
    _close(np.asarray(got), phi * g * ratio + (1 - phi) * g, 1e-4)
  if phi == 1.0:  # the guided output has the conditional output's std, sample by sample
    _close(np.asarray(got).std(axis=(1, 2, 3)), A.std(axis=(1, 2, 3)), 1e-4)


def test_rescale_acts_on_the_mean_channels_of_a_learned_variance_model():
  def model(x, t, y=None):
    yy = y[:, None].astype(jnp.float32)
    return jnp.concatenate([jnp.tanh(x) + 0.3 * yy * x, 0.1 * yy + 0.0 * x], axis=-1)

  kw = dict(sampler="ddpm", variance="learned_range", num_steps=6, guidance_scale=3.0, **GUIDED)
  a = jaxdiff.sample(model, SCHED, (B, 2), jax.random.key(0), guidance_rescale=0.0, **kw)
  b = jaxdiff.sample(model, SCHED, (B, 2), jax.random.key(0), **kw)
  _close(np.asarray(a), np.asarray(b))
  c = jaxdiff.sample(model, SCHED, (B, 2), jax.random.key(0), guidance_rescale=1.0, **kw)
  assert np.all(np.isfinite(np.asarray(c))) and not np.allclose(np.asarray(c), np.asarray(b))


def _traced_calls(**kw):
  """(model batch sizes seen while tracing, jaxpr) of a guided ddim run."""
  seen = []

  def model(x, t, y=None):
    seen.append(x.shape[0])
    return _model(x, t, y)

  jaxpr = jax.make_jaxpr(
    lambda k: jaxdiff.sample(model, SCHED, (B, 2), k, num_steps=5, guidance_scale=2.0, **GUIDED, **kw)
  )(jax.random.key(0))
  return seen, jaxpr


def test_plain_guidance_is_one_batched_call_combined_as_u_plus_s_times_c_minus_u():
  """Guidance with its options left out against a hand-written classifier-free guidance model: the
  unguided sampler on u + s (c - u), both from one model call on the [cond; uncond] batch."""

  def cfg_model(x, t):
    out = _model(jnp.concatenate([x, x]), jnp.concatenate([t, t]), jnp.concatenate([Y, NULL]))
    c, u = out[:B], out[B:]
    return u + 2.5 * (c - u)

  for sampler in ("ddim", "heun", "dpmpp_2m"):
    want = np.asarray(
      jaxdiff.sample(cfg_model, SCHED, (B, 2), jax.random.key(0), sampler=sampler, num_steps=8)
    )
    _close(_run(sampler=sampler, guidance_scale=2.5, **GUIDED), want)


def test_options_add_no_model_evaluation_and_nothing_when_unused():
  plain, jp = _traced_calls()
  assert plain == [2 * B]  # one batched [cond; uncond] call, traced once inside the scan
  n_plain = len(str(jp).splitlines())
  for kw in (
    dict(guidance_rescale=0.5),
    dict(guidance_interval=(100.0, 600.0)),
    dict(guidance_rescale=0.5, guidance_interval=(100.0, 600.0)),
  ):
    seen, jx = _traced_calls(**kw)
    assert seen == plain, kw  # no extra model evaluation
    assert len(str(jx).splitlines()) > n_plain  # the option's arithmetic is there, and only then
  seen = []

  def model(x, t, y=None):
    seen.append(x.shape[0])
    return _model(x, t, y)

  jax.make_jaxpr(
    lambda k: jaxdiff.sample(
      model, SCHED, (B, 2), k, sampler="heun", num_steps=5, guidance_schedule=jnp.ones(5), **GUIDED
    )
  )(jax.random.key(0))
  assert seen == [2 * B] * 3  # heun: two calls in the scan body, one in the final Euler step


def test_new_option_values_do_not_recompile():
  f = samplers.scan._sample_jitted()
  f.clear_cache()
  for phi, lo, sched in ((0.2, 100.0, 2.0), (0.9, 300.0, 4.0)):
    _run(guidance_scale=sched, guidance_rescale=phi, guidance_interval=(lo, 900.0), **GUIDED)
    _run(guidance_schedule=np.full(8, sched), **GUIDED)
  assert f._cache_size() == 2  # one program per set of options used, whatever their values


def test_eta_and_float_options_trace_under_jit():
  """eta (ddim, euler_ancestral), s_noise and the churn options can be traced, like guidance_scale."""
  cases = [
    ("ddim", dict(eta=0.5)),
    ("ddim", dict(eta=0.0)),
    ("euler_ancestral", dict(eta=0.7, s_noise=0.9)),
    ("euler", dict(s_churn=2.0, s_tmin=0.05, s_tmax=50.0, s_noise=1.003)),
    ("heun", dict(s_churn=1.0)),
  ]
  for sampler, opts in cases:
    want = _run(sampler=sampler, guidance_scale=2.0, **GUIDED, **opts)
    names = sorted(opts)
    fn = jax.jit(
      lambda vals, g, sampler=sampler, names=names: jaxdiff.sample(
        _model, SCHED, (B, 2), jax.random.key(0), sampler=sampler, num_steps=8, guidance_scale=g, **GUIDED,
        **dict(zip(names, vals)),
      )
    )  # fmt: skip
    got = fn([jnp.float32(opts[k]) for k in names], jnp.float32(2.0))
    _close(np.asarray(got), want, 1e-4)
    if sampler == "ddim":  # another eta: the same compiled program
      other = fn([jnp.float32(0.25)], jnp.float32(2.0))
      _close(np.asarray(other), _run(sampler="ddim", guidance_scale=2.0, eta=0.25, **GUIDED), 1e-4)
      assert fn._cache_size() == 1
  traced_guidance = jax.jit(
    lambda phi, lo, sc: jaxdiff.sample(
      _model, SCHED, (B, 2), jax.random.key(0), num_steps=8, guidance_rescale=phi, guidance_interval=(lo, 900.0),
      guidance_schedule=sc, **GUIDED,
    )
  )(jnp.float32(0.6), jnp.float32(200.0), jnp.linspace(4.0, 1.0, 8))  # fmt: skip
  want = _run(
    guidance_rescale=0.6, guidance_interval=(200.0, 900.0), guidance_schedule=np.linspace(4, 1, 8), **GUIDED
  )
  _close(np.asarray(traced_guidance), want, 1e-4)


def test_untraceable_option_under_jit_is_named():
  with pytest.raises(ValueError, match="option order cannot be a traced value"):
    jax.jit(
      lambda o: jaxdiff.sample(
        _model, SCHED, (B, 2), jax.random.key(0), sampler="unipc", order=o, cond={"y": Y}
      )
    )(2)


def test_conditioning_errors_come_before_tracing():
  calls = []

  def model(x, t, y=None):
    calls.append(1)
    return _model(x, t, y)

  key = jax.random.key(0)
  with pytest.raises(
    ValueError, match=r"cond\['y'\] has shape \(4,\), but the sample batch \(shape\[0\]\) is 6"
  ):
    jaxdiff.sample(model, SCHED, (B, 2), key, cond={"y": jnp.zeros(4, int)})
  with pytest.raises(ValueError, match=r"uncond\['y'\] has shape \(5,\), but the sample batch"):
    jaxdiff.sample(model, SCHED, (B, 2), key, cond={"y": Y}, uncond={"y": jnp.full(5, 3)}, guidance_scale=2.0)
  with pytest.raises(ValueError, match=r"cond\['y'\] is a scalar; with guidance"):
    jaxdiff.sample(model, SCHED, (B, 2), key, cond={"y": 1}, uncond={"y": NULL}, guidance_scale=2.0)
  with pytest.raises(ValueError, match=r"shape must be \(batch, \*example_shape\)"):
    jaxdiff.sample(model, SCHED, (2,), key)
  with pytest.raises(ValueError, match=r"shape must be \(batch"):
    samplers.Stepper(model, SCHED, (8,), num_steps=3)
  with pytest.raises(ValueError, match="guidance_rescale modifies classifier-free guidance"):
    jaxdiff.sample(model, SCHED, (B, 2), key, cond={"y": Y}, guidance_rescale=0.5)
  with pytest.raises(ValueError, match="either guidance_scale or guidance_schedule"):
    jaxdiff.sample(model, SCHED, (B, 2), key, guidance_scale=2.0, guidance_schedule=np.ones(50), **GUIDED)
  with pytest.raises(ValueError, match=r"one scale per step \(10\)"):
    jaxdiff.sample(model, SCHED, (B, 2), key, num_steps=10, guidance_schedule=np.ones(9), **GUIDED)
  with pytest.raises(ValueError, match="lo <= hi"):
    jaxdiff.sample(model, SCHED, (B, 2), key, guidance_scale=2.0, guidance_interval=(500, 100), **GUIDED)
  with pytest.raises(ValueError, match=r"guidance_rescale must be a finite number in \[0.0, 1.0\]"):
    jaxdiff.sample(model, SCHED, (B, 2), key, guidance_scale=2.0, guidance_rescale=1.5, **GUIDED)
  assert calls == []  # every error above came before the model was traced


def test_model_output_of_the_wrong_shape_is_named():
  with pytest.raises(ValueError, match=r"model_fn returned shape \(6, 3\) for an input of shape \(6, 2\)"):
    jaxdiff.sample(lambda x, t: jnp.zeros((x.shape[0], 3)), SCHED, (B, 2), jax.random.key(0), num_steps=2)


def test_schedule_and_interval_spellings():
  np.testing.assert_allclose(config_sampling.parse_guidance_schedule("linear:4,1", 4), [4, 3, 2, 1])
  np.testing.assert_allclose(config_sampling.parse_guidance_schedule("cosine:1,3", 3), [1, 2, 3], atol=1e-6)
  np.testing.assert_allclose(config_sampling.parse_guidance_schedule("2,3.5,1", 3), [2, 3.5, 1])
  assert config_sampling.parse_guidance_schedule("", 5) is None
  assert config_sampling.parse_guidance_interval("82, 579") == (82.0, 579.0)
  assert config_sampling.parse_guidance_interval("") is None
  with pytest.raises(ValueError, match="has 2 scale"):
    config_sampling.parse_guidance_schedule("2,3", 4)
  with pytest.raises(ValueError, match="linear:a,b"):
    config_sampling.parse_guidance_schedule("step:1,2", 4)
  with pytest.raises(ValueError, match="lo <= hi"):
    config_sampling.parse_guidance_interval("5,1")


def test_bulk_settings_record_and_check_the_options():
  c = tiny_image_config()  # class-conditional, 5 sampler steps
  s, _ = resolve_run(
    c,
    num_samples=10,
    guidance_scale=3.0,
    guidance_options={"guidance_rescale": 0.7, "guidance_interval": "82,579"},
  )
  assert s.guidance == {"guidance_rescale": 0.7, "guidance_interval": [82.0, 579.0]} and s.guided
  assert s.manifest()["guidance"] == s.guidance
  opts = s.sampler_options()
  assert opts["guidance_rescale"] == 0.7 and opts["guidance_interval"] == (82.0, 579.0)
  s, _ = resolve_run(c, num_samples=10, guidance_options={"guidance_schedule": "linear:4,1"})
  assert s.guidance == {"guidance_schedule": [4.0, 3.25, 2.5, 1.75, 1.0]} and s.guided
  hash(tuple(sorted(s.sampler_options().items())))  # generate's compiled-sampler cache keys on them
  s, _ = resolve_run(c, num_samples=10, guidance_scale=2.0)
  assert s.guidance is None  # plain guidance: the manifest of earlier runs
  c.sample.guidance_rescale = 0.5  # from the config alone, at scale 1: changes nothing, recorded as nothing
  assert resolve_run(c, num_samples=10)[0].guidance is None
  assert resolve_run(c, num_samples=10, guidance_scale=2.0)[0].guidance == {"guidance_rescale": 0.5}
  c.sample.guidance_rescale = 0.0
  bad = [
    (dict(guidance_options={"guidance_rescale": 0.5}), "guidance scale is 1"),
    (dict(guidance_scale=2.0, guidance_options={"guidance_rescale": 2.0}), r"must be in \[0, 1\]"),
    (
      dict(guidance_scale=2.0, guidance_options={"guidance_schedule": "linear:4,1"}),
      "leave out --guidance_scale",
    ),
    (dict(guidance_options={"guidance_schedule": "1,2"}), "run has 5 steps"),
    (dict(guidance_scale=2.0, guidance_options={"guidance_interval": "9"}), "lo,hi"),
    (dict(labels="none", guidance_options={"guidance_rescale": 0.5}), "--labels=none"),
  ]
  for kw, msg in bad:
    with pytest.raises(SamplingError, match=msg):
      resolve_run(c, num_samples=10, **kw)


def test_sample_from_config_passes_the_options():
  """config.sample's guidance fields reach jaxdiff.sample: the same samples as the direct call."""

  c = tiny_image_config()
  c.model.name = "mlp"
  c.model.hidden_dim = 16
  c.model.num_layers = 1
  c.model.data_dim = 2
  c.model.num_classes = 3
  c.sample.clip_x0 = 0.0
  c.sample.guidance_scale = 2.0
  c.sample.guidance_rescale = 0.5
  c.sample.guidance_interval = "100,700"
  model = create_model(c)
  params = random_params(model, jnp.zeros((1, 2)), jnp.zeros((1,)), jnp.zeros((1,), jnp.int32))["params"]
  labels = jnp.arange(4) % 3
  got = config_sampling.sample_from_config(c, model, SCHED, params, jax.random.key(1), 4, labels)
  want = jaxdiff.sample(
    config_sampling.model_fn(model, params), SCHED, (4, 2), jax.random.key(1), num_steps=5,
    cond={"y": labels}, uncond={"y": jnp.full((4,), 3)}, guidance_scale=2.0, guidance_rescale=0.5,
    guidance_interval=(100.0, 700.0),
  )  # fmt: skip
  _close(np.asarray(got), np.asarray(want))
  sched = config_sampling.sample_from_config(
    c, model, SCHED, params, jax.random.key(1), 4, labels, guidance_schedule="linear:3,1"
  )
  want = jaxdiff.sample(
    config_sampling.model_fn(model, params), SCHED, (4, 2), jax.random.key(1), num_steps=5,
    cond={"y": labels}, uncond={"y": jnp.full((4,), 3)}, guidance_schedule=np.linspace(3, 1, 5),
    guidance_rescale=0.5, guidance_interval=(100.0, 700.0),
  )  # fmt: skip
  _close(np.asarray(sched), np.asarray(want))


def test_readme_guidance_snippet_runs():
  from helpers import documented_text

  text = documented_text()  # README.md and the guides (docs/guides/functional-api.md)
  block = re.search(r"<!-- guidance snippet -->\s*```python\n(.*?)```", text, re.S).group(1)
  scope: dict = {}
  exec(compile(block, "README.md", "exec"), scope)
  assert scope["x"].shape == (16, 8, 8, 1) and np.all(np.isfinite(np.asarray(scope["x"])))


@pytest.fixture(scope="module")
def labelled_points_workdir(tmp_path_factory):
  """A tiny class-conditional MLP on 2-D points, its checkpoint holding random weights (no training)."""
  wd = str(tmp_path_factory.mktemp("guided") / "run")
  c = tiny_points_config()
  c.model.num_classes = 3
  c.sample.num_steps = 6
  model = create_model(c)
  abstract = jax.eval_shape(lambda: create_train_state(c, model, jax.random.key(0)))
  params = random_params(model, jnp.zeros((1, 2)), jnp.zeros((1,)), jnp.zeros((1,), jnp.int32))["params"]
  state = jax.tree_util.tree_map(lambda a: jnp.zeros(a.shape, a.dtype), abstract)
  state = state.replace(params=params, ema_params=params)
  ck = Checkpointer(wd, async_save=False)
  ck.save(state)
  ck.close()
  save_config(c, wd)
  return wd


def test_generate_records_the_options_and_refuses_a_changed_run(labelled_points_workdir, tmp_path):
  out = str(tmp_path / "g")
  kw = dict(num_samples=6, guidance_scale=3.0, progress=False, shard_size=6)
  opts = {"guidance_rescale": 0.7, "guidance_interval": "100,700"}
  summary = generate(labelled_points_workdir, out, guidance_options=opts, **kw)
  manifest = json.load(open(f"{out}/run.json"))
  assert manifest["guidance"] == {"guidance_rescale": 0.7, "guidance_interval": [100.0, 700.0]}
  got = read_shard(os.path.join(out, summary["files"][0]))["points"]
  plain = generate(labelled_points_workdir, str(tmp_path / "p"), **kw)
  assert not np.allclose(got, read_shard(os.path.join(str(tmp_path / "p"), plain["files"][0]))["points"])
  with pytest.raises(SamplingError, match="belongs to a different run.*guidance"):
    generate(labelled_points_workdir, out, guidance_options={"guidance_rescale": 0.5}, **kw)
  generate(labelled_points_workdir, out, guidance_options=opts, **kw)  # the same run: resumes


@pytest.mark.parametrize(
  "field,value,named",
  [
    ("guidance_rescale", 1.5, "sample.guidance_rescale"),
    ("guidance_interval", "5,1", "guidance_interval"),
    ("guidance_schedule", "1,2,3", "guidance_schedule"),
    ("guidance_schedule", "square:1,2", "guidance_schedule"),
  ],
)
def test_bad_guidance_config_is_refused_at_start_up(field, value, named):
  c = default.get_config()
  c.sample[field] = value
  with pytest.raises(ConfigError, match=named):
    validate_config(c)
  c.sample[field] = default.get_config().sample[field]
  validate_config(c)  # the default passes
