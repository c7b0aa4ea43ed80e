"""Training: the step, EMA, sharding equivalence, resume, preemption, multi-process, errors."""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import ROOT, tiny_image_config, tiny_points_config, tiny_train_cmd

from jaxdiff import parallel
from jaxdiff.config_utils import ConfigError, schedule_from_config
from jaxdiff.models import create_model
from jaxdiff.training import (
  Checkpointer,
  CheckpointError,
  NonFiniteLossError,
  WorkdirError,
  create_train_state,
  ema_decay,
  ema_update,
  make_train_step,
  train,
)


def _leaves(tree):
  return [np.asarray(x) for x in jax.tree_util.tree_leaves(jax.device_get(tree))]


def test_loss_falls_when_overfitting_one_batch():
  c = tiny_image_config()
  c.optim.learning_rate = 2e-3
  model, sched = create_model(c), schedule_from_config(c)
  state = create_train_state(c, model, jax.random.key(0))
  step = jax.jit(make_train_step(c, model, sched))
  from jaxdiff.data import create_dataset

  batch = next(create_dataset(c))
  key = jax.random.key(1)
  losses = []
  for i in range(150):
    # the same timesteps and noise every step (key fixed, step folded in): average over a window
    state, m = step(state, batch, key)
    losses.append(float(m["loss"]))
  assert np.mean(losses[-20:]) < 0.6 * np.mean(losses[:10]), (np.mean(losses[:10]), np.mean(losses[-20:]))


def test_ema_arithmetic():
  assert float(ema_decay(0, 0.9999, True)) == pytest.approx(0.1)
  assert float(ema_decay(90, 0.9999, True)) == pytest.approx(91 / 100)
  assert float(ema_decay(10**7, 0.9999, True)) == pytest.approx(0.9999)
  assert float(ema_decay(0, 0.99, False)) == pytest.approx(0.99)
  out = ema_update({"a": jnp.array([1.0, 2.0])}, {"a": jnp.array([3.0, 6.0])}, jnp.asarray(0.75))
  np.testing.assert_allclose(np.asarray(out["a"]), [1.5, 3.0])
  # inside the step: ema_1 = d0 * params_0 + (1 - d0) * params_1 with d0 = min(0.9, 1/10)
  c = tiny_points_config()
  model, sched = create_model(c), schedule_from_config(c)
  s0 = create_train_state(c, model, jax.random.key(0))
  batch = {"x": np.random.default_rng(0).normal(size=(16, 2)).astype(np.float32)}
  s1, _ = jax.jit(make_train_step(c, model, sched))(s0, batch, jax.random.key(1))
  for e, p0, p1 in zip(_leaves(s1.ema_params), _leaves(s0.params), _leaves(s1.params)):
    np.testing.assert_allclose(e, 0.1 * p0 + 0.9 * p1, rtol=1e-5, atol=1e-7)


SHARDED_SCRIPT = r"""
import os, sys, json
sys.path.insert(0, {root!r}); sys.path.insert(0, os.path.join({root!r}, "tests"))
import jax, numpy as np
from helpers import tiny_image_config
from jaxdiff import parallel
from jaxdiff.config_utils import schedule_from_config
from jaxdiff.models import create_model
from jaxdiff.training import create_train_state, make_train_step
from jaxdiff.data import create_dataset
assert jax.device_count() == 8, jax.devices()
c = tiny_image_config()
c.model.dropout = 0.1
model, sched = create_model(c), schedule_from_config(c)
batches = [b for _, b in zip(range(3), create_dataset(c))]
out = {{}}
for name, devs in (("one", jax.devices()[:1]), ("eight", jax.devices())):
  mesh = parallel.create_mesh(devs)
  repl, data = parallel.replicated(mesh), parallel.data_sharding(mesh)
  state = jax.jit(lambda k: create_train_state(c, model, k), out_shardings=repl)(jax.random.key(0))
  step = jax.jit(make_train_step(c, model, sched), in_shardings=(repl, data, repl), out_shardings=(repl, repl),
                 donate_argnums=(0,))
  key = jax.device_put(jax.random.key(1), repl)
  for b in batches:
    state, m = step(state, parallel.to_global(b, data), key)
  out[name] = [np.asarray(x) for x in jax.tree_util.tree_leaves(jax.device_get(state.params))]
  out[name + "_loss"] = float(m["loss"])
diff = max(float(np.max(np.abs(a - b))) for a, b in zip(out["one"], out["eight"]))
scale = max(float(np.max(np.abs(a))) for a in out["one"])
print(json.dumps({{"diff": diff, "scale": scale, "l1": out["one_loss"], "l8": out["eight_loss"]}}))
"""


def _env(**extra):
  env = dict(os.environ)
  env.update({"JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": ROOT}, **extra)
  return env


def test_sharded_step_on_8_devices_equals_one_device():
  env = _env(XLA_FLAGS="--xla_force_host_platform_device_count=8")
  r = subprocess.run(
    [sys.executable, "-c", SHARDED_SCRIPT.format(root=ROOT)],
    env=env,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert r.returncode == 0, r.stderr[-3000:]
  res = json.loads(r.stdout.strip().splitlines()[-1])
  assert res["diff"] < 1e-5 * max(res["scale"], 1.0), res
  assert res["l1"] == pytest.approx(res["l8"], rel=1e-5)


def test_resume_equals_uninterrupted_run(tmp_path):
  c = tiny_points_config(num_steps=20)
  straight = train(c, str(tmp_path / "a"))
  c2 = tiny_points_config(num_steps=20)
  train(c2, str(tmp_path / "b"), stop_at_step=10)  # interrupted after a checkpoint at step 10
  assert Checkpointer(str(tmp_path / "b")).all_steps() == [10]
  resumed = train(c2, str(tmp_path / "b"))
  assert int(resumed.step) == int(straight.step) == 20
  for a, b in zip(
    _leaves(straight.params) + _leaves(straight.ema_params),
    _leaves(resumed.params) + _leaves(resumed.ema_params),
  ):
    np.testing.assert_array_equal(a, b)


def test_steps_per_dispatch_gives_same_result(tmp_path):
  a = train(tiny_points_config(num_steps=10), str(tmp_path / "a"))
  c = tiny_points_config(num_steps=10)
  c.train.steps_per_dispatch = 5
  b = train(c, str(tmp_path / "b"))
  for x, y in zip(_leaves(a.params), _leaves(b.params)):
    np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)


def test_grad_accumulation_updates_every_k_steps(tmp_path):
  c = tiny_points_config(num_steps=3)
  c.train.grad_accum_steps = 2
  c.train.checkpoint_every = 10
  c.train.log_every = 1
  s = train(c, str(tmp_path / "w"))
  init = create_train_state(c, create_model(c), jax.random.split(jax.random.key(c.seed))[0])
  assert any(not np.array_equal(a, b) for a, b in zip(_leaves(init.params), _leaves(s.params)))
  assert int(s.opt_state.mini_step) == 1  # 3 micro-steps = one applied update + one pending


def test_metrics_and_outputs_written(tmp_path):
  c = tiny_points_config(num_steps=10)
  c.train.sample_every = 10
  c.train.num_sample_images = 200
  train(c, str(tmp_path))
  rows = [json.loads(l) for l in open(tmp_path / "metrics.jsonl")]
  logged = [r for r in rows if "loss" in r]
  assert [r["step"] for r in logged] == [5, 10]
  for key in ("loss", "grad_norm", "learning_rate", "steps_per_sec", "images_per_sec"):
    assert np.isfinite(logged[-1][key])
  shares = [f"time/{c}_share" for c in ("input", "step", "checkpoint", "metrics", "samples")]
  for r in logged:  # where each window's wall time went: fractions that sum to 1
    assert all(0 <= r[k] <= 1 for k in shares) and sum(r[k] for k in shares) == pytest.approx(1, abs=1e-6)
  assert logged[-1]["time/samples_share"] > 0  # the grid at step 10 falls in the window that ends there
  assert logged[-1]["time/checkpoint_share"] > 0 and logged[0]["time/checkpoint_share"] == 0
  assert (tmp_path / "samples" / "step_0000010.png").exists()
  assert any(p.startswith("events") for p in os.listdir(tmp_path / "tensorboard"))
  assert json.load(open(tmp_path / "config.json"))["model"]["name"] == "mlp"


def test_breakdown_counts_input_only_while_the_device_waits():
  from jaxdiff.training.breakdown import WallBreakdown, device_idle, short_line

  clock = WallBreakdown()
  slow = jax.jit(lambda x: jnp.linalg.matrix_power(x, 64))
  busy = slow(jnp.eye(700) * 0.5)  # dispatched, still computing
  assert not device_idle(busy)
  assert clock.wait_input(busy, lambda: time.sleep(0.05) or "batch") == "batch"
  assert clock.spent["input"] == 0.0  # overlapped with the running step
  busy.block_until_ready()
  clock.wait_input(busy, lambda: time.sleep(0.05))
  assert clock.spent["input"] >= 0.05  # the device had finished: the step waited for this batch
  with clock.timing("checkpoint"):
    time.sleep(0.05)
  s = clock.shares()
  assert s["time/checkpoint_share"] > 0 and sum(s.values()) == pytest.approx(1)
  assert s["time/step_share"] == pytest.approx(1 - s["time/input_share"] - s["time/checkpoint_share"])
  assert short_line(s).startswith("in ")


def test_metrics_window_keeps_rows_read_back_for_a_checkpoint(tmp_path):
  from jaxdiff.training.metrics import MetricsWindow

  w = MetricsWindow(4, "stop", Checkpointer(str(tmp_path)), None)
  w.add(0, {"loss": jnp.asarray(1.0), "nonfinite": jnp.asarray(0)}, 1)
  assert w.flush()["loss"] == 1.0  # read back before a checkpoint in mid-window
  w.add(1, {"loss": jnp.asarray(3.0), "nonfinite": jnp.asarray(0)}, 1)
  s = w.summary()
  assert s["loss"] == 2.0 and sum(v for k, v in s.items() if k.startswith("time/")) == pytest.approx(1)


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, monkeypatch):
  import jaxdiff.data as data_lib

  real = data_lib.create_dataset

  def poisoned(config, start_step=0, **kw):
    for i, b in enumerate(real(config, start_step=start_step, **kw), start=start_step):
      if i >= 12:
        b = dict(b, x=np.full_like(b["x"], np.nan))
      yield b

  monkeypatch.setattr(data_lib, "create_dataset", poisoned)
  c = tiny_points_config(num_steps=20)
  with pytest.raises(NonFiniteLossError, match="step 13") as e:
    train(c, str(tmp_path))
  assert "step 10" in str(e.value)
  ck = Checkpointer(str(tmp_path))
  assert ck.all_steps() == [10]
  state, s = ck.restore(create_train_state(c, create_model(c), jax.random.key(0)))
  assert s == 10 and all(np.all(np.isfinite(x)) for x in _leaves(state.params))
  # the skip policy carries on with the parameters untouched by the bad steps
  c.train.nan_policy = "skip"
  out = train(c, str(tmp_path / "skip"))
  assert int(out.step) == 20 and all(np.all(np.isfinite(x)) for x in _leaves(out.params))


def test_corrupt_latest_checkpoint_falls_back(tmp_path):
  c = tiny_points_config(num_steps=20)
  train(c, str(tmp_path))
  ck_dir = tmp_path / "checkpoints" / "20"
  for root, _, files in os.walk(ck_dir):
    for f in files:
      p = os.path.join(root, f)
      if os.path.getsize(p) > 0:
        with open(p, "wb") as fh:
          fh.write(b"garbage")
  state, s = Checkpointer(str(tmp_path)).restore(create_train_state(c, create_model(c), jax.random.key(0)))
  assert s == 10 and int(state.step) == 10


def test_mismatched_checkpoint_is_a_clear_error(tmp_path):
  c = tiny_points_config(num_steps=10)
  train(c, str(tmp_path))
  c.model.hidden_dim = 48
  with pytest.raises(CheckpointError, match="different model"):
    train(c, str(tmp_path))


@pytest.mark.parametrize(
  "field,value,match",
  [
    ("train.batch_size", 0, "train.batch_size"),
    ("diffusion.prediction", "score", "diffusion.prediction"),
    ("optim.learning_rate", -1.0, "optim.learning_rate"),
    ("sample.sampler", "plms", "sample.sampler"),
    ("diffusion.schedule", "exp", "diffusion.schedule"),
    ("train.label_dropout", 1.5, "train.label_dropout"),
  ],
)
def test_bad_config_values(tmp_path, field, value, match):
  c = tiny_points_config()
  sec, name = field.split(".")
  c[sec][name] = value
  with pytest.raises(ConfigError, match=match):
    train(c, str(tmp_path))


def test_unwritable_workdir(tmp_path):
  ro = tmp_path / "ro"
  ro.mkdir()
  os.chmod(ro, 0o500)
  if os.access(str(ro), os.W_OK):  # root ignores permissions: use a path under a file instead
    blocker = tmp_path / "file"
    blocker.write_text("x")
    target = str(blocker / "run")
  else:
    target = str(ro / "run")
  with pytest.raises(WorkdirError, match="Cannot write"):
    train(tiny_points_config(), target)


def test_batch_not_divisible_by_devices_message():
  mesh = parallel.create_mesh()
  with pytest.raises(ValueError, match="multiple of the device count"):
    parallel.check_global_batch(jax.device_count() * 4 + 1 if jax.device_count() > 1 else 0, mesh)


_train_cmd = tiny_train_cmd


def test_sigterm_saves_a_loadable_checkpoint(tmp_path):
  wd = tmp_path / "w"
  proc = subprocess.Popen(
    _train_cmd(
      wd,
      "--config.train.num_steps=1000000",
      "--config.train.log_every=10",
      "--config.train.checkpoint_every=100000",
    ),
    env=_env(),
    stdout=subprocess.PIPE,
    stderr=subprocess.PIPE,
    text=True,
  )
  deadline = time.time() + 120
  while time.time() < deadline and not (wd / "metrics.jsonl").exists():
    time.sleep(0.5)
  while time.time() < deadline and sum(1 for _ in open(wd / "metrics.jsonl")) < 3:
    time.sleep(0.2)
  proc.send_signal(signal.SIGTERM)
  out, err = proc.communicate(timeout=120)
  assert proc.returncode == 0, err[-3000:]
  assert "SIGTERM" in out
  steps = Checkpointer(str(wd)).all_steps()
  assert len(steps) == 1 and steps[0] > 0
  c = tiny_points_config()
  state, s = Checkpointer(str(wd)).restore(create_train_state(c, create_model(c), jax.random.key(0)))
  assert s == steps[0] and int(state.step) == s


def test_two_process_run_trains_and_checkpoints(tmp_path):
  import socket

  with socket.socket() as sock:
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
  wd = tmp_path / "mp"
  procs = [
    subprocess.Popen(
      _train_cmd(
        wd,
        "--config.train.num_steps=10",
        "--config.train.log_every=5",
        "--config.train.checkpoint_every=5",
        f"--coordinator_address=127.0.0.1:{port}",
        "--num_processes=2",
        f"--process_id={i}",
      ),
      env=_env(),
      stdout=subprocess.PIPE,
      stderr=subprocess.PIPE,
      text=True,
    )
    for i in range(2)
  ]
  outs = [p.communicate(timeout=240) for p in procs]
  for p, (o, e) in zip(procs, outs):
    assert p.returncode == 0, e[-3000:]
  assert "2 process(es)" in outs[0][0] and "2 device(s)" in outs[0][0]
  assert "jaxdiff train" not in outs[1][0]  # only process 0 prints and writes logs
  assert Checkpointer(str(wd)).all_steps() == [5, 10]
  rows = [json.loads(l) for l in open(wd / "metrics.jsonl")]
  assert [r["step"] for r in rows if "loss" in r] == [5, 10]


def test_metrics_window_means_throughput_and_nonfinite(tmp_path):
  from jaxdiff import perf, training
  from jaxdiff.training.metrics import MetricsWindow

  assert training.setup_compilation_cache is perf.setup_compilation_cache  # the old import keeps working
  ck = Checkpointer(str(tmp_path))
  w = MetricsWindow(16, "stop", ck, None)
  assert w.flush() == {}
  one = lambda loss: {"loss": jnp.asarray(loss), "nonfinite": jnp.asarray(0)}
  w.add(0, one(1.0), 1)
  w.add(1, {"loss": jnp.asarray([2.0, 4.0]), "nonfinite": jnp.asarray([0, 1])}, 2)  # two scanned steps
  s = w.summary()
  assert s["loss"] == pytest.approx(7 / 3) and s["nonfinite"] == 1.0
  assert s["images_per_sec"] == pytest.approx(16 * s["steps_per_sec"]) and w.steps == 0
  w.last_saved = 10
  w.add(10, one(float("nan")), 1)
  with pytest.raises(NonFiniteLossError, match=r"step 11\..*\(step 10\) in .*checkpoints is intact"):
    w.flush()
  w = MetricsWindow(16, "skip", ck, None)
  w.add(0, one(float("inf")), 1)
  assert not np.isfinite(w.flush()["loss"])
  ck.close()


def _global_state():
  """What a library call must leave as it found it: JAX's config, the loggers, the interpreter hooks."""
  import logging

  loggers = {name: logging.getLogger(name) for name in ("", "absl", "jax", "orbax", "jaxdiff")}
  return (
    dict(jax.config.values),
    {n: (lg.level, list(lg.filters), list(lg.handlers), lg.propagate) for n, lg in loggers.items()},
    sys.unraisablehook,
    sys.excepthook,
  )


def test_library_calls_leave_global_jax_and_logging_state_alone(tmp_path):
  from jaxdiff.training import load_config
  from jaxdiff.training.restore import restore_model

  c = tiny_points_config(num_steps=10)
  c.train.compilation_cache_dir = str(tmp_path / "xla")  # a library call does not switch the cache on
  before = _global_state()
  train(c, str(tmp_path / "w"))
  restore_model(str(tmp_path / "w"))
  load_config(str(tmp_path / "w"))
  after = _global_state()
  changed = {k: (v, after[0].get(k)) for k, v in before[0].items() if after[0].get(k) != v}
  assert not changed
  assert before[1:] == after[1:]
  assert not (tmp_path / "xla").exists()


def test_resumed_run_compiles_with_the_options_it_started_with(tmp_path, monkeypatch, caplog):
  """A run started under JAXDIFF_CPU_COMPILER_OPTIONS=off records it; resumed without the variable,
  it compiles with its recorded options and ends bit-identical to the uninterrupted run."""
  import logging

  from jaxdiff import perf
  from jaxdiff.training.run_records import RUN_RECORD_NAME

  monkeypatch.setenv(perf.ENV_SWITCH, "off")
  straight = train(tiny_points_config(num_steps=20), str(tmp_path / "a"))
  train(tiny_points_config(num_steps=20), str(tmp_path / "b"), stop_at_step=10)
  record = json.loads((tmp_path / "b" / RUN_RECORD_NAME).read_text())
  assert record["compiler_options"] == {} and record["compiler_options_mode"] == "off"
  monkeypatch.delenv(perf.ENV_SWITCH)
  assert perf.cpu_compiler_options("cpu") == perf.CPU_COMPILER_OPTIONS  # what a new run would take
  with caplog.at_level(logging.WARNING):
    resumed = train(tiny_points_config(num_steps=20), str(tmp_path / "b"))
  assert "options this run started with" in caplog.text
  assert json.loads((tmp_path / "b" / RUN_RECORD_NAME).read_text())["compiler_options"] == {}
  for a, b in zip(_leaves(straight.params), _leaves(resumed.params)):
    np.testing.assert_array_equal(a, b)
