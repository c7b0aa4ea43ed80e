"""Fully sharded data parallelism (config.parallel.fsdp): the sharding rule, the mesh, equality with
pure data parallelism, checkpoints across meshes and device counts, bytes per device, sampling from
an FSDP workdir, and 2 processes x 4 devices.

The multi-device runs happen in subprocesses with XLA_FLAGS=--xla_force_host_platform_device_count
(jax is already initialised with one CPU device in this process); one 8-device script does all the
8-device work once for the module (fixture `runs`) and writes what the tests check as JSON / npz.
"""

import json
import os
import re
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest
from helpers import ROOT, tiny_points_config
from jax.sharding import PartitionSpec as P

from jaxdiff import parallel
from jaxdiff.bulk import read_shard, restore_model
from jaxdiff.bulk.batches import _sampling_fsdp
from jaxdiff.config_utils import ConfigError
from jaxdiff.models import create_model
from jaxdiff.training import Checkpointer, create_train_state, train
from jaxdiff.training.state import create_optimizer, state_bytes_per_device, train_state_shardings

BYTES_RE = re.compile(
  r"mesh data (\d+) x fsdp (\d+), ([\d,]+) bytes/device of params \+ optimizer state \+ EMA"
)


def _env(devices: int | None = None, **extra):
  env = dict(os.environ)
  env.update({"JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": ROOT}, **extra)
  env.pop("XLA_FLAGS", None)
  if devices:
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
  return env


def _bytes_line(text: str) -> tuple[int, int, int]:
  m = BYTES_RE.search(text)
  assert m, text[-2000:]
  return int(m.group(1)), int(m.group(2)), int(m.group(3).replace(",", ""))


# ---------------------------------------------------------------------------------------------
# the rule and the mesh (this process, one device)


def test_fsdp_spec_rule():
  # the largest dimension divisible by N (the last of equals), small or indivisible arrays replicated
  assert parallel.fsdp_spec((3, 3, 64, 128), 8) == P(None, None, None, "fsdp")
  assert parallel.fsdp_spec((256, 64), 8) == P("fsdp")
  assert parallel.fsdp_spec((64, 64), 8) == P(None, "fsdp")
  assert parallel.fsdp_spec((12, 16), 8) == P(None, "fsdp")
  assert parallel.fsdp_spec((24, 16), 8) == P("fsdp")
  assert parallel.fsdp_spec((3, 5, 7), 8) == P()  # no dimension divides
  assert parallel.fsdp_spec((64,), 8, min_size=65) == P()  # small: replicated
  assert parallel.fsdp_spec((64,), 8, min_size=64) == P("fsdp")
  assert parallel.fsdp_spec((), 8) == P()  # scalars (the step counter)
  assert parallel.fsdp_spec((256, 64), 1) == P()  # fsdp = 1: pure data parallel


def test_mesh_and_config_errors(tmp_path):
  mesh = parallel.create_mesh()
  assert mesh.axis_names == ("data", "fsdp") and mesh.devices.shape == (1, 1)
  assert parallel.data_sharding(mesh).spec == P(("data", "fsdp"))
  assert parallel.data_sharding(mesh, leading_axes=1).spec == P(None, ("data", "fsdp"))
  with pytest.raises(ConfigError, match=r"config\.parallel\.fsdp=2 must be a positive divisor.*\[1\]"):
    parallel.create_mesh(fsdp=2)
  c = tiny_points_config()
  c.parallel.fsdp = 0
  with pytest.raises(ConfigError, match=r"config\.parallel\.fsdp=0"):
    parallel.mesh_from_config(c)
  c.parallel.fsdp = 3  # the loop refuses it before compiling anything
  with pytest.raises(ConfigError, match=r"config\.parallel\.fsdp=3"):
    train(c, str(tmp_path / "w"))


def test_bytes_per_device_from_shardings():
  """The figure comes from the shard shapes: a hand count on a 1-device mesh (everything whole)."""
  c = tiny_points_config()
  model = create_model(c)
  tx, _ = create_optimizer(c)
  abstract = jax.eval_shape(lambda: create_train_state(c, model, jax.random.key(0), tx))
  sh = train_state_shardings(c, model, parallel.create_mesh(), tx)
  n = sum(int(np.prod(a.shape)) for a in jax.tree_util.tree_leaves(abstract.params))
  # params + EMA + Adam's mu and nu (float32) + the step counts of Adam and of the learning-rate
  # schedule (int32); clipping keeps no state
  assert state_bytes_per_device(abstract, sh) == 4 * (4 * n) + 2 * 4


# ---------------------------------------------------------------------------------------------
# 8 devices (one subprocess for the module)

RUNS_SCRIPT = r"""
import contextlib, io, json, os, sys
sys.path.insert(0, {root!r}); sys.path.insert(0, os.path.join({root!r}, "tests"))
import jax, numpy as np
jax.config.update("jax_disable_most_optimizations", True)  # behaviour, not speed
from helpers import tiny_image_config, tiny_points_config
from jaxdiff import parallel
from jaxdiff.models import create_model
from jaxdiff.training import Checkpointer, create_train_state, train
from jaxdiff.training.state import create_optimizer, train_state_shardings
assert jax.device_count() == 8, jax.devices()
out_dir = {out!r}
res = {{}}

def leaves(state):
  return [np.asarray(x) for x in jax.tree_util.tree_leaves((state.params, state.ema_params, state.opt_state))]

def rel(a, b):  # max |a - b| over every array, relative to the largest |a|
  return max(float(np.max(np.abs(x - y))) for x, y in zip(a, b)) / max(float(np.max(np.abs(x))) for x in a)

def run(c, name, stop=None):
  buf = io.StringIO()
  with contextlib.redirect_stdout(buf):
    state = train(c, os.path.join(out_dir, name), stop_at_step=stop)
  res.setdefault("logs", {{}})[name + f"@{{int(state.step)}}"] = buf.getvalue()
  return state

def unet(fsdp):
  c = tiny_image_config(num_steps=4)
  c.model.base_channels, c.model.channel_mult = 16, (1,)  # one level: the quickest UNet to compile
  c.model.dropout = 0.1
  c.train.grad_accum_steps = 2  # optax.MultiSteps: 2 updates in 4 steps, EMA after each update
  c.train.checkpoint_every = 2
  c.ema.decay = 0.9
  c.parallel.fsdp = fsdp
  c.parallel.fsdp_min_size = 0  # shard every array that divides: the 1/8 is then a property of the rule
  return c

# data parallel (8 x 1) vs fully sharded (1 x 8) ...
dp = run(unet(1), "dp")
fs = run(unet(8), "fsdp")
res["sharded_specs"] = sorted({{str(x.sharding.spec) for x in jax.tree_util.tree_leaves(fs.params)}})
res["shard_shape_kernel"] = [list(x.addressable_shards[0].data.shape) for x in jax.tree_util.tree_leaves(fs.params)
                             if x.shape == (3, 3, 16, 16)][:1]
res["dp_vs_fsdp"] = rel(leaves(dp), leaves(fs))
n = len(jax.tree_util.tree_leaves(dp.params))
res["dp_vs_fsdp_params"] = rel(leaves(dp)[:n], leaves(fs)[:n])
np.savez(os.path.join(out_dir, "fsdp_ema.npz"), *[np.asarray(x) for x in jax.tree_util.tree_leaves(fs.ema_params)])
# ... the FSDP run's step-4 checkpoint restored onto fsdp 1 and fsdp 4 meshes: exactly its values
c = unet(1)
model = create_model(c)
tx, _ = create_optimizer(c)
for f in (1, 4):
  c = unet(f)
  sh = train_state_shardings(c, model, parallel.mesh_from_config(c), tx)
  target = jax.jit(lambda: create_train_state(c, model, jax.random.key(0), tx), out_shardings=sh)()
  ck = Checkpointer(os.path.join(out_dir, "fsdp"))
  back, s = ck.restore(target, step=4)
  ck.close()
  res[f"restore_fsdp8_onto_{{f}}_equal"] = s == 4 and all(np.array_equal(x, y) for x, y in zip(leaves(back), leaves(fs)))
  res[f"restore_onto_{{f}}_specs"] = sorted({{str(x.sharding.spec) for x in jax.tree_util.tree_leaves(back.params)}})

# the DiT (adaLN-Zero, attention, remat per block), 8 x 1 vs 1 x 8, default fsdp_min_size
def dit(fsdp):
  c = tiny_image_config(num_steps=4)
  c.model.name, c.model.hidden_size, c.model.depth, c.model.num_heads = "dit", 32, 2, 2
  c.train.grad_accum_steps = 2
  c.train.checkpoint_every = 4
  c.ema.decay = 0.9
  c.parallel.fsdp = fsdp
  return c

ddp, dfs = run(dit(1), "dit_dp"), run(dit(8), "dit_fsdp")
res["dit_dp_vs_fsdp"] = rel(leaves(ddp), leaves(dfs))
res["dit_sharded"] = sum(x.sharding.spec != jax.sharding.PartitionSpec() for x in jax.tree_util.tree_leaves(dfs.params))

# the loop resuming on other meshes (MLP: quick to compile): fsdp 8 to step 2, fsdp 1 to 4, then a
# (2 x 4) mesh to 6, against pure data parallelism to 6
def mlp(fsdp):
  c = tiny_points_config(num_steps=6)
  c.train.checkpoint_every = 2
  c.parallel.fsdp, c.parallel.fsdp_min_size = fsdp, 0
  return c

mdp = run(mlp(1), "mlp_dp")
for f, stop in ((8, 2), (1, 4), (4, 6)):
  mfs = run(mlp(f), "mlp_fsdp", stop=stop)
res["mlp_dp_vs_resumed"] = rel(leaves(mdp), leaves(mfs))
c = mlp(8)
c.train.steps_per_dispatch, c.train.log_every = 2, 2  # scanned steps: the sharded state is the carry
res["mlp_dp_vs_fsdp_scanned"] = rel(leaves(mdp), leaves(run(c, "mlp_fsdp_scanned")))
json.dump(res, open(os.path.join(out_dir, "results.json"), "w"))
print(json.dumps(res))
"""


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  out = str(tmp_path_factory.mktemp("fsdp"))
  r = subprocess.run(
    [sys.executable, "-c", RUNS_SCRIPT.format(root=ROOT, out=out)],
    env=_env(8),
    capture_output=True,
    text=True,
    timeout=600,
  )
  assert r.returncode == 0, r.stderr[-4000:]
  res = json.loads(r.stdout.strip().splitlines()[-1])
  res["dir"] = out
  return res


def test_fsdp_equals_data_parallel(runs):
  """UNet with dropout, gradient accumulation (MultiSteps) and EMA: the 1 x 8 mesh gives the 8 x 1
  run's parameters, EMA and Adam state (XLA sums the gradients in another order: 1e-5)."""
  assert "P(None, None, None, 'fsdp')" in runs["sharded_specs"]
  assert runs["shard_shape_kernel"] == [[3, 3, 16, 2]]  # a (3, 3, 16, 16) kernel, 1/8 per device
  assert runs["dp_vs_fsdp"] < 1e-5, runs


def test_dit_fsdp_equals_data_parallel(runs):
  """The DiT with the default fsdp_min_size (1024): its larger arrays sharded, same numbers."""
  assert runs["dit_sharded"] >= 8, runs["dit_sharded"]
  assert runs["dit_dp_vs_fsdp"] < 1e-5, runs
  d1, f1, b1 = _bytes_line(runs["logs"]["dit_dp@4"])
  d8, f8, b8 = _bytes_line(runs["logs"]["dit_fsdp@4"])
  assert (f1, f8) == (1, 8) and b8 < b1 / 4, (b1, b8)  # small arrays stay whole: not quite 1/8


def test_checkpoints_restore_onto_other_meshes(runs):
  """fsdp 8 -> 1 (replicated) and -> 4, exactly; the loop resumes a run on other meshes (8 -> 1
  -> 2 x 4) and ends where the data-parallel run ends."""
  assert runs["restore_fsdp8_onto_1_equal"] and runs["restore_fsdp8_onto_4_equal"]
  assert runs["restore_onto_1_specs"] == ["P()"]
  assert "P(None, None, None, 'fsdp')" in runs["restore_onto_4_specs"]
  logs = runs["logs"]
  assert "resumed at step 2" in logs["mlp_fsdp@4"] and "resumed at step 4" in logs["mlp_fsdp@6"]
  assert [_bytes_line(logs[f"mlp_fsdp@{s}"])[:2] for s in (2, 4, 6)] == [(1, 8), (8, 1), (2, 4)]
  assert runs["mlp_dp_vs_resumed"] < 1e-5, runs
  assert runs["mlp_dp_vs_fsdp_scanned"] < 1e-5, runs  # and with train.steps_per_dispatch = 2


def test_bytes_per_device_is_one_eighth(runs):
  d1, f1, b1 = _bytes_line(runs["logs"]["dp@4"])
  d8, f8, b8 = _bytes_line(runs["logs"]["fsdp@4"])
  assert (d1, f1, d8, f8) == (8, 1, 1, 8)
  # every array of this UNet has a dimension divisible by 8 except a few scalars and 1-element biases
  assert 1 / 8 <= b8 / b1 < 1.01 / 8, (b1, b8)
  _, _, m1 = _bytes_line(runs["logs"]["mlp_fsdp@4"])
  _, _, m4 = _bytes_line(runs["logs"]["mlp_fsdp@6"])
  assert 1 / 4 <= m4 / m1 < 1.05 / 4, (m1, m4)


def test_sample_from_fsdp_workdir_on_one_device(runs, tmp_path):
  """A workdir trained on 8 devices with fsdp 8 restores on this 1-device process exactly, and
  sample.py generates from it."""
  wd = os.path.join(runs["dir"], "fsdp")
  _, _, _, ema, step = restore_model(wd)
  want = np.load(os.path.join(runs["dir"], "fsdp_ema.npz"), allow_pickle=False)
  got = jax.tree_util.tree_leaves(ema)
  assert step == 4 and len(got) == len(want.files)
  assert all(np.array_equal(g, want[f"arr_{i}"]) for i, g in enumerate(got))
  r = subprocess.run(
    [sys.executable, os.path.join(ROOT, "sample.py"), f"--workdir={wd}", f"--output={tmp_path / 'gen'}"]
    + ["--num_samples=4", "--num_steps=3", "--batch_size=4"],
    env=_env(),
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert r.returncode == 0, r.stderr[-3000:]
  summary = json.load(open(tmp_path / "gen" / "summary.json"))
  assert summary["checkpoint_step"] == 4 and summary["num_samples"] == 4
  # on 8 devices the parameters are sharded as in training (fsdp 8): the same samples
  r = subprocess.run(
    [sys.executable, os.path.join(ROOT, "sample.py"), f"--workdir={wd}", f"--output={tmp_path / 'gen8'}"]
    + ["--num_samples=8", "--num_steps=3", "--batch_size=8"],
    env=_env(8),
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert r.returncode == 0, r.stderr[-3000:]
  one = [read_shard(str(p))["images"] for p in sorted((tmp_path / "gen").glob("*.npz"))]
  eight = [read_shard(str(p))["images"] for p in sorted((tmp_path / "gen8").glob("*.npz"))]
  assert one and eight  # deterministic per sample (uint8: at most one level from summation order)
  assert np.abs(eight[0][:4].astype(int) - one[0][:4].astype(int)).max() <= 1


def test_sampling_shares_parameters_as_training_did():
  c = tiny_points_config()
  for fsdp, local, want in ((1, 8, 1), (8, 8, 8), (8, 4, 4), (4, 6, 2)):
    c.parallel.fsdp = fsdp
    assert _sampling_fsdp(c, local) == want


@pytest.mark.slow
def test_two_processes_fsdp_equals_one_process(tmp_path):
  """2 processes x 4 devices with fsdp 8 (every array split across both processes) train the MLP
  to the numbers of 1 process on 1 device, and the periodic sample grid (sampled with the sharded
  EMA, gathered to the host) is written. Slow: three processes start and compile (~1-2 min)."""
  with socket.socket() as sock:
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
  wd = tmp_path / "mp"
  procs = [
    subprocess.Popen(
      _points_cmd(wd, f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2", f"--process_id={i}"),
      env=_env(4),
      stdout=subprocess.PIPE,
      stderr=subprocess.PIPE,
      text=True,
    )
    for i in range(2)
  ]
  outs = [p.communicate(timeout=300) for p in procs]
  for p, (o, e) in zip(procs, outs):
    assert p.returncode == 0, e[-3000:]
  assert "2 process(es)" in outs[0][0] and "8 device(s)" in outs[0][0]
  assert _bytes_line(outs[0][0])[:2] == (1, 8)
  assert (wd / "samples" / "step_0000006.png").stat().st_size > 0
  c = tiny_points_config(num_steps=6)
  c.train.checkpoint_every = 6
  b = train(c, str(tmp_path / "one"))  # the same run on this process's one device
  target = jax.device_put(
    create_train_state(c, create_model(c), jax.random.key(0)), parallel.replicated(parallel.create_mesh())
  )
  ck = Checkpointer(str(wd))
  a, sa = ck.restore(target)
  ck.close()
  assert sa == int(b.step) == 6
  la = jax.tree_util.tree_leaves((a.params, a.ema_params, a.opt_state))
  lb = jax.tree_util.tree_leaves((b.params, b.ema_params, b.opt_state))
  scale = max(float(np.max(np.abs(np.asarray(x)))) for x in lb)
  assert max(float(np.max(np.abs(np.asarray(x) - np.asarray(y)))) for x, y in zip(la, lb)) < 1e-5 * scale


def _points_cmd(wd, *extra):
  """train.py with tiny_points_config's settings (6 steps, a sample grid at the end), fsdp 8."""
  return [
    sys.executable,
    os.path.join(ROOT, "train.py"),
    f"--config={ROOT}/configs/default.py",
    f"--workdir={wd}",
    "--config.model.name=mlp",
    "--config.model.hidden_dim=32",
    "--config.model.num_layers=2",
    "--config.model.num_classes=0",
    "--config.data.name=toy2d/s_curve",
    "--config.data.num_classes=0",
    "--config.data.image_size=0",
    "--config.data.channels=0",
    "--config.train.batch_size=16",
    "--config.train.num_steps=6",
    "--config.train.log_every=5",
    "--config.train.checkpoint_every=6",
    "--config.train.sample_every=6",
    "--config.train.num_sample_images=16",
    "--config.train.compilation_cache_dir=none",
    "--config.optim.warmup_steps=0",
    "--config.optim.learning_rate=1e-3",
    "--config.ema.decay=0.9",
    "--config.sample.clip_x0=0.0",
    "--config.sample.num_steps=10",
    "--config.parallel.fsdp=8",
    "--config.parallel.fsdp_min_size=0",
    *extra,
  ]
