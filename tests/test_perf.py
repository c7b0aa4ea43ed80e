"""jaxdiff.perf: the CPU compiler options jaxdiff compiles its programs with."""

import glob
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import ROOT, tiny_image_config, tiny_points_config

import jaxdiff
from jaxdiff import perf, schedules
from jaxdiff.config_utils import schedule_from_config
from jaxdiff.data import create_dataset
from jaxdiff.errors import ConfigError
from jaxdiff.models import UNet, create_model
from jaxdiff.training import create_train_state, make_multi_step, make_train_step
from jaxdiff.training.step import multi_step_impl

OPTION = "xla_cpu_experimental_ynn_fusion_type"


@pytest.fixture(autouse=True)
def _reset(monkeypatch, tmp_path):
  monkeypatch.delenv(perf.ENV_SWITCH, raising=False)
  monkeypatch.delenv("XLA_FLAGS", raising=False)
  monkeypatch.setenv(perf.TUNE_CACHE_ENV, str(tmp_path / "cpu_options.json"))
  monkeypatch.setattr(perf, "_tuned", None)
  yield
  perf.set_cpu_compiler_options(None)


def test_options_on_cpu_only(monkeypatch):
  assert perf.cpu_compiler_options("cpu") == perf.CPU_COMPILER_OPTIONS  # the default: no env needed
  monkeypatch.setenv(perf.ENV_SWITCH, "static")
  assert perf.cpu_compiler_options("cpu") == perf.CPU_COMPILER_OPTIONS
  assert perf.cpu_compiler_options("gpu") == {}
  assert perf.cpu_compiler_options("tpu") == {}


def test_env_switch_and_user_flags_win(monkeypatch):
  monkeypatch.setenv(perf.ENV_SWITCH, "off")
  assert perf.cpu_compiler_options("cpu") == {}
  monkeypatch.delenv(perf.ENV_SWITCH)
  monkeypatch.setenv("XLA_FLAGS", f"--xla_force_host_platform_device_count=2 --{OPTION}=")
  assert OPTION not in perf.cpu_compiler_options("cpu")


def test_override_and_reset(monkeypatch):
  monkeypatch.setenv(perf.ENV_SWITCH, "static")
  perf.set_cpu_compiler_options({})
  assert perf.cpu_compiler_options("cpu") == {}
  perf.set_cpu_compiler_options({"xla_backend_optimization_level": 1})
  assert perf.cpu_compiler_options("cpu") == {"xla_backend_optimization_level": 1}
  perf.set_cpu_compiler_options(None)
  assert perf.cpu_compiler_options("cpu") == perf.CPU_COMPILER_OPTIONS
  with pytest.raises(TypeError):
    perf.set_cpu_compiler_options("ynn=off")


def test_options_reach_the_sampler_and_keep_results(monkeypatch):
  """The same UNet sampled with XLA's defaults and with jaxdiff's options: different
  executables (different kernels), the same samples up to float32 rounding."""
  monkeypatch.setenv(perf.ENV_SWITCH, "static")
  model = UNet(
    base_channels=8,
    channel_mult=(1, 2),
    num_res_blocks=1,
    attention_resolutions=(4,),
    num_heads=1,
    num_groups=4,
    out_channels=1,
  )
  x = jnp.zeros((1, 8, 8, 1))
  params = model.init(jax.random.key(0), x, jnp.zeros((1,), jnp.int32))["params"]
  # Non-zero output convolution so the network's output depends on every layer.
  params = jax.tree_util.tree_map(lambda p: p + 0.05 * jnp.cos(jnp.arange(p.size).reshape(p.shape)), params)
  fn = jaxdiff.bind(model.apply, {"params": params})
  sched = schedules.linear(100)
  outs = {}
  for name, opts in (("xla", {}), ("jaxdiff", None)):
    perf.set_cpu_compiler_options(opts)
    outs[name] = np.asarray(
      jaxdiff.sample(fn, sched, (2, 8, 8, 1), jax.random.key(3), sampler="ddim", num_steps=5)
    )
  jits = jaxdiff.samplers.scan._SAMPLE_JITS
  assert jits.keys() >= {(), tuple(sorted(perf.CPU_COMPILER_OPTIONS.items()))}
  assert np.all(np.isfinite(outs["xla"]))
  np.testing.assert_allclose(outs["jaxdiff"], outs["xla"], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
  "probe, choice",
  [
    ({"ynn_off": 1.0, "xla_default": 0.97}, "ynn_off"),  # within the 5 % margin: the static default
    ({"ynn_off": 1.0, "xla_default": 0.80}, "xla_default"),
    ({"ynn_off": 0.7, "xla_default": 1.0}, "ynn_off"),
  ],
)
def test_tuned_choice_is_measured_once_and_cached(monkeypatch, tmp_path, probe, choice):
  monkeypatch.setenv(perf.ENV_SWITCH, "auto")  # the probe is opt-in
  calls = []

  def fake_probe(candidates, rounds):
    calls.append(sorted(candidates))
    return dict(probe)

  monkeypatch.setattr(perf, "_probe", fake_probe)
  monkeypatch.setattr(perf, "_can_tune", lambda: True)
  assert perf.cpu_compiler_options("cpu") == perf.CPU_OPTION_CANDIDATES[choice]
  assert calls == [sorted(perf.CPU_OPTION_CANDIDATES)]
  cache = json.load(open(tmp_path / "cpu_options.json"))
  (entry,) = cache.values()
  assert entry["choice"] == choice and entry["machine"] == perf.machine_fingerprint()
  # a new process (no in-memory choice) reads the cache instead of measuring again
  monkeypatch.setattr(perf, "_tuned", None)
  monkeypatch.setattr(perf, "_probe", lambda *a: pytest.fail("measured twice"))
  assert perf.cpu_compiler_options("cpu") == perf.CPU_OPTION_CANDIDATES[choice]
  # another machine (other SIMD flags) gets its own entry
  monkeypatch.setattr(perf, "_tuned", None)
  monkeypatch.setattr(perf, "machine_fingerprint", lambda: {**entry["machine"], "simd": "avx2"})
  monkeypatch.setattr(perf, "_probe", fake_probe)
  perf.tune_cpu_compiler_options()
  assert len(calls) == 2 and len(json.load(open(tmp_path / "cpu_options.json"))) == 2


def test_no_tuning_under_test_settings_or_a_trace(monkeypatch):
  monkeypatch.setattr(perf, "_probe", lambda *a: pytest.fail("probe ran"))
  previous = jax.config.read("jax_disable_most_optimizations")
  jax.config.update("jax_disable_most_optimizations", True)
  try:
    assert perf.tune_cpu_compiler_options() == perf.CPU_COMPILER_OPTIONS
  finally:
    jax.config.update("jax_disable_most_optimizations", previous)
  jax.jit(lambda x: x + len(perf.tune_cpu_compiler_options()))(1.0)


def test_real_probe_times_every_candidate(monkeypatch):
  """The probe compiles and times each candidate (speed itself is not asserted)."""
  times = perf._probe(perf.CPU_OPTION_CANDIDATES, rounds=1)
  assert set(times) == set(perf.CPU_OPTION_CANDIDATES) and all(t > 0 for t in times.values())


def test_unrolled_steps_per_dispatch_are_bit_identical_to_single_steps():
  """make_multi_step's unrolled loop (the CPU default): k steps in one program give exactly the
  state and metrics of k calls of the single step (dropout on, so every random stream counts)."""
  c = tiny_image_config()
  c.model.dropout = 0.1
  model, sched = create_model(c), schedule_from_config(c)
  k = 2
  batches = [b for _, b in zip(range(k), create_dataset(c))]
  step = make_train_step(c, model, sched)
  key = jax.random.key(1)
  single = jax.jit(step, compiler_options=perf.compiler_options())
  state = create_train_state(c, model, jax.random.key(0))
  metrics = []
  for b in batches:
    state, m = single(state, b, key)
    metrics.append(m)
  assert make_multi_step(step, k, "auto") is not step and multi_step_impl("auto", "cpu") == "unroll"
  multi = jax.jit(make_multi_step(step, k, "unroll"), compiler_options=perf.compiler_options())
  stacked = {name: np.stack([b[name] for b in batches]) for name in batches[0]}
  state_k, metrics_k = multi(create_train_state(c, model, jax.random.key(0)), stacked, key)
  assert int(state_k.step) == k
  for a, b in zip(jax.tree_util.tree_leaves(state), jax.tree_util.tree_leaves(state_k)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  for name in metrics[0]:
    np.testing.assert_array_equal(
      np.stack([np.asarray(m[name]) for m in metrics]), np.asarray(metrics_k[name])
    )


def _cache_choosing(path, choice):
  """A probe cache whose entry for this machine names `choice`, as an earlier probe would leave it."""
  fp = perf.machine_fingerprint()
  entry = {"choice": choice, "options": perf.CPU_OPTION_CANDIDATES[choice], "machine": fp}
  path.write_text(json.dumps({perf._machine_key(fp): entry}))


def _train_steps(steps=3):
  c = tiny_points_config()  # an MLP: dots, whose kernels the YNNPACK option changes, compiled fast
  model, sched = create_model(c), schedule_from_config(c)
  step = jax.jit(make_train_step(c, model, sched), compiler_options=perf.compiler_options())
  state, losses = create_train_state(c, model, jax.random.key(0)), []
  for _, batch in zip(range(steps), create_dataset(c)):
    state, metrics = step(state, batch, jax.random.key(1))
    losses.append(np.asarray(metrics["loss"]))
  return losses, [np.asarray(x) for x in jax.tree_util.tree_leaves(state.params)]


def test_default_options_do_not_depend_on_a_probe(monkeypatch, tmp_path):
  """Whatever an earlier probe chose for this machine, the default compiles the same program: two
  runs of the same config give bit-identical losses and parameters."""
  monkeypatch.setattr(perf, "_can_tune", lambda: True)
  monkeypatch.setattr(perf, "_probe", lambda *a: pytest.fail("a timing probe ran by default"))
  runs = []
  for choice in ("xla_default", "ynn_off"):
    _cache_choosing(tmp_path / "cpu_options.json", choice)
    monkeypatch.setattr(perf, "_tuned", None)
    assert perf.cpu_compiler_options("cpu") == perf.CPU_COMPILER_OPTIONS
    runs.append(_train_steps())
  for a, b in zip(runs[0][0] + runs[0][1], runs[1][0] + runs[1][1]):
    np.testing.assert_array_equal(a, b)
  monkeypatch.setenv(perf.ENV_SWITCH, "auto")  # asked for: the cached choice is used
  _cache_choosing(tmp_path / "cpu_options.json", "xla_default")
  monkeypatch.setattr(perf, "_tuned", None)
  assert perf.cpu_compiler_options("cpu") == {}


def test_unknown_option_mode_is_a_config_error_naming_the_variable(monkeypatch):
  monkeypatch.setenv(perf.ENV_SWITCH, "fastest")
  with pytest.raises(ConfigError, match=perf.ENV_SWITCH):
    perf.cpu_compiler_options("cpu")


def test_no_private_jax_imports_in_the_library():
  offenders = []
  for path in glob.glob(os.path.join(ROOT, "jaxdiff", "**", "*.py"), recursive=True):
    with open(path) as f:
      for i, line in enumerate(f, 1):
        if "jax._src" in line and not line.lstrip().startswith("#"):
          offenders.append(f"{os.path.relpath(path, ROOT)}:{i}")
  assert not offenders, offenders
