"""jaxdiff.perf: the CPU compiler options jaxdiff compiles its programs with."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxdiff
from jaxdiff import perf, schedules
from jaxdiff.models import UNet

OPTION = "xla_cpu_experimental_ynn_fusion_type"


@pytest.fixture(autouse=True)
def _reset(monkeypatch):
  monkeypatch.delenv(perf.ENV_SWITCH, raising=False)
  monkeypatch.delenv("XLA_FLAGS", raising=False)
  yield
  perf.set_cpu_compiler_options(None)


def test_options_on_cpu_only():
  assert perf.cpu_compiler_options("cpu") == perf.CPU_COMPILER_OPTIONS
  assert perf.cpu_compiler_options("gpu") == {}
  assert perf.cpu_compiler_options("tpu") == {}


def test_env_switch_and_user_flags_win(monkeypatch):
  monkeypatch.setenv(perf.ENV_SWITCH, "off")
  assert perf.cpu_compiler_options("cpu") == {}
  monkeypatch.delenv(perf.ENV_SWITCH)
  monkeypatch.setenv("XLA_FLAGS", f"--xla_force_host_platform_device_count=2 --{OPTION}=")
  assert OPTION not in perf.cpu_compiler_options("cpu")


def test_override_and_reset():
  perf.set_cpu_compiler_options({})
  assert perf.cpu_compiler_options("cpu") == {}
  perf.set_cpu_compiler_options({"xla_backend_optimization_level": 1})
  assert perf.cpu_compiler_options("cpu") == {"xla_backend_optimization_level": 1}
  perf.set_cpu_compiler_options(None)
  assert perf.cpu_compiler_options("cpu") == perf.CPU_COMPILER_OPTIONS
  with pytest.raises(TypeError):
    perf.set_cpu_compiler_options("ynn=off")


def test_options_reach_the_sampler_and_keep_results():
  """The same UNet sampled with XLA's defaults and with jaxdiff's options: different
  executables (different kernels), the same samples up to float32 rounding."""
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
  assert jaxdiff.samplers._SAMPLE_JITS.keys() >= {(), tuple(sorted(perf.CPU_COMPILER_OPTIONS.items()))}
  assert np.all(np.isfinite(outs["xla"]))
  np.testing.assert_allclose(outs["jaxdiff"], outs["xla"], rtol=1e-4, atol=1e-4)
