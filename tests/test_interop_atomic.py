"""python -m jaxdiff.interop import / export write whole or not at all, and check everything first.

A kill at any write leaves the target absent or complete (simulated in process: every write event
can raise, and clean-up is disabled, as after kill -9); bad inputs (NaN weights, wrong config types,
a file or a read-only disk as the target, incomplete or doubled pipeline folders) are one line
naming the problem, with nothing written.
"""

import contextlib
import errno
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import safetensors.numpy
from helpers import ROOT

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

from jaxdiff import fileio  # noqa: E402
from jaxdiff.errors import CheckpointError, ConfigError, WorkdirError  # noqa: E402
from jaxdiff.interop import export_workdir, import_diffusers, staging  # noqa: E402
from jaxdiff.interop import workdir as workdir_lib  # noqa: E402
from jaxdiff.interop.__main__ import main as interop_main  # noqa: E402
from jaxdiff.training import checkpointer  # noqa: E402
from jaxdiff.training.restore import restore_model  # noqa: E402

pytestmark = pytest.mark.usefixtures("fast_compiles")

UNET = dict(
  sample_size=8,
  in_channels=1,
  out_channels=1,
  norm_num_groups=8,
  block_out_channels=(8, 16),
  layers_per_block=1,
  down_block_types=("DownBlock2D", "AttnDownBlock2D"),
  up_block_types=("AttnUpBlock2D", "UpBlock2D"),
  attention_head_dim=None,
)


def _unet(seed=0, **kw):
  torch.manual_seed(seed)
  m = diffusers.UNet2DModel(**{**UNET, **kw}).eval()
  with torch.no_grad():
    for p in m.parameters():
      p.add_(0.1 * torch.randn_like(p))
  return m


def _pipeline(path, seed=0, **sched_kw):
  unet = _unet(seed)
  sched = diffusers.DDIMScheduler(num_train_timesteps=1000, **sched_kw)
  diffusers.DDIMPipeline(unet=unet, scheduler=sched).save_pretrained(path)
  return unet


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
  """(pipeline folder, its UNet, a workdir imported from it): shared by the tests that only read them."""
  root = tmp_path_factory.mktemp("imported")
  unet = _pipeline(root / "pipe", seed=1)
  import_diffusers(str(root / "pipe"), str(root / "wd"))
  return root / "pipe", unet, root / "wd"


@contextlib.contextmanager
def cached_reads(monkeypatch):
  """Read and convert the source once (restore_model / the diffusers folder): the write phase, the
  one that is killed, starts from the same checked result every time."""
  memo = {}

  def cached(name, fn):
    def wrapper(*a, **k):
      key = (name, repr(a), repr(sorted(k.items())))
      if key not in memo:
        memo[key] = fn(*a, **k)
      return memo[key]

    return wrapper

  with monkeypatch.context() as m:
    m.setattr(workdir_lib, "_import_config", cached("import", workdir_lib._import_config))
    m.setattr(workdir_lib, "restore_model", cached("restore", workdir_lib.restore_model))
    yield


class Killed(BaseException):
  """Stands in for kill -9: not an Exception, and (with clean-up disabled) nothing runs after it."""


@contextlib.contextmanager
def killed_at(monkeypatch, at: int | None):
  """Count every write event (a file written whole, a folder made, a checkpoint saved, a folder
  renamed into place); raise Killed instead of event number `at` (None: never). Clean-up
  (`fileio.rmtree`) does nothing meanwhile, so the disk stays as a kill would leave it. Yields
  the list holding the count."""
  count = [0]

  def tick():
    if at is not None and count[0] == at:
      raise Killed
    count[0] += 1

  def counted(fn):
    def wrapper(*a, **k):
      tick()
      return fn(*a, **k)

    return wrapper

  with monkeypatch.context() as m:
    m.setattr(fileio, "atomic_write", counted(fileio.atomic_write))
    m.setattr(fileio, "makedirs", counted(fileio.makedirs))
    m.setattr(checkpointer.Checkpointer, "save", counted(checkpointer.Checkpointer.save))
    m.setattr(staging, "_rename", counted(staging._rename))
    m.setattr(fileio, "rmtree", lambda *a, **k: None)
    yield count


def _visible(folder):
  return sorted(n for n in os.listdir(folder) if not n.startswith("."))


def _same_weights(unet, folder):
  back = diffusers.UNet2DModel.from_pretrained(os.path.join(folder, "unet"))
  for k, v in unet.state_dict().items():
    np.testing.assert_array_equal(back.state_dict()[k].numpy(), v.numpy(), err_msg=k)


def test_import_killed_at_any_write_leaves_no_workdir(tmp_path, monkeypatch, imported):
  """Killed at each write in turn, the workdir is absent; a re-import then works, and train.py on the
  path refuses to start (no random weights)."""
  pipe = str(imported[0])
  parent = tmp_path / "runs"
  parent.mkdir()
  wd = str(parent / "wd")
  with cached_reads(monkeypatch):
    with killed_at(monkeypatch, None) as count:
      import_diffusers(pipe, str(tmp_path / "probe"))
    events = count[0]
    assert events >= 5  # folders, the checkpoint, its checksums, config.py, config.json, the rename
    for at in range(events):
      with killed_at(monkeypatch, at), pytest.raises(Killed):
        import_diffusers(pipe, wd)
      assert not os.path.exists(wd), at
      assert _visible(parent) == [], (at, os.listdir(parent))  # only hidden partial folders
  r = subprocess.run(
    [sys.executable, "train.py", f"--workdir={wd}"],
    cwd=ROOT, capture_output=True, text=True, timeout=300,
  )  # fmt: skip
  assert r.returncode != 0 and "holds no run" in r.stderr, r.stderr[-2000:]
  assert not os.path.exists(os.path.join(wd, "checkpoints"))
  import_diffusers(pipe, wd)  # the re-import is not blocked by the leftovers
  assert restore_model(wd)[4] == 0


def test_export_killed_at_any_write_leaves_old_or_new_folder(tmp_path, monkeypatch, imported):
  """Export into a new folder: absent or complete. Export with --overwrite over another pipeline:
  the old pipeline, nothing, or the new one, never a mix."""
  _, new, wd = imported
  old = _unet(seed=2)
  with cached_reads(monkeypatch):
    with killed_at(monkeypatch, None) as count:
      export_workdir(str(wd), str(tmp_path / "probe"))
    events = count[0]
    assert events >= 4  # folders, the weights, config.json, the scheduler, model_index.json, the rename
    for at in range(events + 1):  # the last: the second rename of a replacement
      out = tmp_path / f"out{at}"
      if at < events:
        with killed_at(monkeypatch, at), pytest.raises(Killed):
          export_workdir(str(wd), str(out))
        assert not out.exists(), at
      over = tmp_path / f"over{at}"
      diffusers.DDIMPipeline(unet=old, scheduler=diffusers.DDIMScheduler()).save_pretrained(over)
      old_files = sorted(os.listdir(over))
      with killed_at(monkeypatch, at), pytest.raises(Killed):
        export_workdir(str(wd), str(over), overwrite=True)
      if over.exists():  # the old pipeline, untouched
        assert sorted(os.listdir(over)) == old_files
        _same_weights(old, over)
      else:
        assert at == events, at  # only between moving the old folder aside and the new one in
  export_workdir(str(wd), str(tmp_path / "over0"), overwrite=True)
  _same_weights(new, tmp_path / "over0")


def test_replacing_a_unet_pipeline_with_a_dit_leaves_no_stale_unet(tmp_path):
  torch.manual_seed(0)
  dit = diffusers.DiTTransformer2DModel(
    num_attention_heads=2, attention_head_dim=8, in_channels=2, out_channels=2, num_layers=1, sample_size=4,
    patch_size=2, num_embeds_ada_norm=3,
  )  # fmt: skip
  dit.save_pretrained(tmp_path / "dit")
  import_diffusers(str(tmp_path / "dit"), str(tmp_path / "wd"))
  _pipeline(tmp_path / "out")
  with pytest.raises(WorkdirError, match="not empty.*--overwrite"):
    export_workdir(str(tmp_path / "wd"), str(tmp_path / "out"))
  export_workdir(str(tmp_path / "wd"), str(tmp_path / "out"), overwrite=True)
  assert sorted(os.listdir(tmp_path / "out")) == ["scheduler", "transformer"]
  import_diffusers(str(tmp_path / "out"), str(tmp_path / "wd2"))  # one model: imports


def test_import_refuses_a_non_empty_workdir_unless_overwrite(tmp_path):
  _pipeline(tmp_path / "pipe")
  wd = tmp_path / "wd"
  wd.mkdir()
  (wd / "notes.txt").write_text("mine")
  with pytest.raises(WorkdirError, match="not empty"):
    import_diffusers(str(tmp_path / "pipe"), str(wd))
  assert _visible(wd) == ["notes.txt"]
  import_diffusers(str(tmp_path / "pipe"), str(wd), overwrite=True)
  assert _visible(wd) == ["checkpoints", "config.json", "config.py"]
  (tmp_path / "empty").mkdir()
  import_diffusers(str(tmp_path / "pipe"), str(tmp_path / "empty"))  # an empty folder is fine


def test_import_into_a_checkpoint_dir(tmp_path):
  unet = _pipeline(tmp_path / "pipe")
  wd, ck = tmp_path / "wd", tmp_path / "store" / "ck"
  assert interop_main(["import", str(tmp_path / "pipe"), str(wd), f"--checkpoint_dir={ck}"]) == 0
  assert not (wd / "checkpoints").exists() and (ck / "0").is_dir()
  config = json.loads((wd / "config.json").read_text())
  assert config["train"]["checkpoint_dir"] == str(ck)
  export_workdir(str(wd), str(tmp_path / "out"))
  _same_weights(unet, tmp_path / "out")


def _cli_error(capsys, *argv) -> str:
  """The one line `python -m jaxdiff.interop` prints for a user error (exit status 2)."""
  assert interop_main(list(argv)) == 2
  err = capsys.readouterr().err.strip()
  assert err.count("\n") == 0 and "Traceback" not in err, err
  return err


def test_nan_weights_are_refused_before_anything_is_written(tmp_path, capsys):
  _pipeline(tmp_path / "pipe")
  weights = tmp_path / "pipe" / "unet" / "diffusion_pytorch_model.safetensors"
  tensors = safetensors.numpy.load_file(str(weights))
  key = sorted(tensors)[3]
  tensors[key] = tensors[key].copy()
  tensors[key].flat[0] = np.nan
  safetensors.numpy.save_file(tensors, str(weights))
  err = _cli_error(capsys, "import", str(tmp_path / "pipe"), str(tmp_path / "wd"))
  assert key in err and "NaN" in err
  assert not (tmp_path / "wd").exists()
  tensors[key].flat[0] = np.inf
  safetensors.numpy.save_file(tensors, str(weights))
  with pytest.raises(CheckpointError, match=key):
    import_diffusers(str(tmp_path / "pipe"), str(tmp_path / "wd"))


@pytest.mark.parametrize(
  "file,field,value",
  [
    ("unet/config.json", "block_out_channels", "8,16"),
    ("unet/config.json", "layers_per_block", 1.5),
    ("unet/config.json", "sample_size", -8),
    ("unet/config.json", "sample_size", "8"),
    ("unet/config.json", "norm_eps", "1e-5"),
    ("unet/config.json", "down_block_types", "DownBlock2D"),
    ("unet/config.json", "flip_sin_to_cos", "yes"),
    ("scheduler/scheduler_config.json", "beta_start", "0.0001"),
    ("scheduler/scheduler_config.json", "num_train_timesteps", 1000.5),
    ("scheduler/scheduler_config.json", "clip_sample", 1),
    ("scheduler/scheduler_config.json", "prediction_type", ["epsilon"]),
    ("scheduler/scheduler_config.json", "_class_name", 3),
  ],
)
def test_wrong_config_types_are_one_line(tmp_path, capsys, file, field, value):
  _pipeline(tmp_path / "pipe")
  path = tmp_path / "pipe" / file
  cfg = json.loads(path.read_text())
  cfg[field] = value
  path.write_text(json.dumps(cfg))
  err = _cli_error(capsys, "import", str(tmp_path / "pipe"), str(tmp_path / "wd"))
  assert field in err, err
  assert not (tmp_path / "wd").exists()


def test_bad_targets_are_one_line(tmp_path, capsys, imported):
  pipe, _, wd = imported
  (tmp_path / "file").write_text("x")
  assert "is a file" in _cli_error(capsys, "import", str(pipe), str(tmp_path / "file"))
  assert "is a file" in _cli_error(capsys, "import", str(tmp_path / "file"), str(tmp_path / "wd"))
  err = _cli_error(capsys, "import", str(pipe / "unet"), str(tmp_path / "wd"), "--image_size=-4")
  assert "image_size=-4" in err
  assert not (tmp_path / "wd").exists()
  assert "is a file" in _cli_error(capsys, "export", str(wd), str(tmp_path / "file"))
  (tmp_path / "out").mkdir()
  (tmp_path / "out" / "keep").write_text("x")
  assert "--overwrite" in _cli_error(capsys, "export", str(wd), str(tmp_path / "out"))


def test_read_only_targets_are_one_line_naming_the_path(tmp_path, capsys, monkeypatch, imported):
  """EROFS (a read-only mount; simulated: root ignores permission bits) from import and export."""
  pipe, _, wd = imported
  ro = tmp_path / "ro"
  real = fileio.makedirs

  def makedirs(path, exist_ok=True):
    if str(path).startswith(str(ro)):
      raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
    return real(path, exist_ok=exist_ok)

  monkeypatch.setattr(fileio, "makedirs", makedirs)
  for argv in (
    ["import", str(pipe), str(ro / "wd")],
    ["export", str(wd), str(ro / "out")],
  ):
    err = _cli_error(capsys, *argv)
    assert str(ro) in err and "Read-only" in err and "writable" in err, err


def test_incomplete_or_doubled_pipeline_folders_are_refused(tmp_path):
  def fresh(name):
    path = tmp_path / name
    _pipeline(path)
    return path

  p = fresh("no_sched")
  os.remove(p / "scheduler" / "scheduler_config.json")
  with pytest.raises(ConfigError, match="incomplete.*scheduler"):
    import_diffusers(str(p), str(tmp_path / "wd"))
  p = fresh("no_weights")
  os.remove(p / "unet" / "diffusion_pytorch_model.safetensors")
  with pytest.raises(ConfigError, match="incomplete.*unet/diffusion_pytorch_model"):
    import_diffusers(str(p), str(tmp_path / "wd"))
  p = fresh("no_index_part")
  index = json.loads((p / "model_index.json").read_text())
  index["scheduler"] = ["diffusers", "DDIMScheduler"]
  os.rename(p / "scheduler", p / "sched_old")
  with pytest.raises(ConfigError, match="incomplete.*scheduler"):
    import_diffusers(str(p), str(tmp_path / "wd"))
  p = fresh("two_models")
  os.makedirs(p / "transformer")
  with pytest.raises(ConfigError, match="two models"):
    import_diffusers(str(p), str(tmp_path / "wd"))
  assert not (tmp_path / "wd").exists()


@pytest.mark.slow
def test_vae_import_and_export_killed_at_any_write_leave_no_target(tmp_path, monkeypatch):
  """AutoencoderKL folder -> autoencoder workdir -> AutoencoderKL folder, killed at each write in
  turn: the target is absent every time; uninterrupted, both complete."""
  from jaxdiff.interop import export_vae_workdir, import_vae

  torch.manual_seed(0)
  vae = diffusers.AutoencoderKL(
    in_channels=1, out_channels=1, sample_size=8, block_out_channels=(8, 16), layers_per_block=1,
    latent_channels=4, norm_num_groups=8, down_block_types=("DownEncoderBlock2D",) * 2,
    up_block_types=("UpDecoderBlock2D",) * 2,
  )  # fmt: skip
  vae.save_pretrained(str(tmp_path / "vae"))
  import_vae(str(tmp_path / "vae"), str(tmp_path / "wd"))
  for name, write in [
    ("wd2", lambda target: import_vae(str(tmp_path / "vae"), target)),
    ("out", lambda target: export_vae_workdir(str(tmp_path / "wd"), target)),
  ]:
    target = str(tmp_path / name)
    with killed_at(monkeypatch, None) as count:
      write(str(tmp_path / f"probe_{name}"))
    assert count[0] >= 3
    for at in range(count[0]):
      with killed_at(monkeypatch, at), pytest.raises(Killed):
        write(target)
      assert not os.path.exists(target), (name, at)
    write(target)
  back = diffusers.AutoencoderKL.from_pretrained(str(tmp_path / "out"))
  for k, v in vae.state_dict().items():
    np.testing.assert_array_equal(back.state_dict()[k].numpy(), v.numpy(), err_msg=k)
