"""jaxdiff.interop against diffusers itself: UNet2DModel folders with random weights of every supported
layout load into jaxdiff UNets with the same outputs, save back into folders diffusers loads with the
same weights, scheduler configs give the same chain and DDIM samples, and an imported pipeline
samples and fine-tunes through the ordinary commands. Nothing is downloaded: the DDPM checkpoints'
layouts are checked from their configs (jaxdiff.interop.DDPM_CONFIGS) on torch's meta device.
"""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import ROOT

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

from jaxdiff import schedules  # noqa: E402
from jaxdiff.config_sampling import sample_from_config  # noqa: E402
from jaxdiff.configs import with_defaults  # noqa: E402
from jaxdiff.errors import CheckpointError, ConfigError, WorkdirError  # noqa: E402
from jaxdiff.interop import (  # noqa: E402
  DDPM_CONFIGS,
  config_to_scheduler,
  dit_model_config,
  export_workdir,
  import_diffusers,
  load_diffusers_dit,
  load_diffusers_unet,
  save_diffusers_dit,
  save_diffusers_unet,
  scheduler_overrides,
  unet_model_config,
)
from jaxdiff.interop.__main__ import main as interop_main  # noqa: E402
from jaxdiff.interop.unet import unet_params_from_diffusers, unet_to_diffusers_config  # noqa: E402
from jaxdiff.models import UNet, count_params, create_model  # noqa: E402
from jaxdiff.training.restore import restore_model  # noqa: E402

pytestmark = pytest.mark.usefixtures("fast_compiles")

TINY = dict(sample_size=8, in_channels=3, out_channels=3, norm_num_groups=8)
LAYOUTS = {
  # google/ddpm-*: bottom/right padding, [sin, cos] with freq_shift 1, one head, eps 1e-6
  "ddpm": dict(
    block_out_channels=(16, 32, 32),
    layers_per_block=1,
    down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
    downsample_padding=0,
    flip_sin_to_cos=False,
    freq_shift=1,
    attention_head_dim=None,
    norm_eps=1e-6,
  ),
  # UNet2DModel's own defaults (diffusers' training examples): [cos, sin], heads of 8, no middle attention
  "defaults_heads": dict(
    block_out_channels=(16, 32),
    layers_per_block=2,
    down_block_types=("AttnDownBlock2D", "AttnDownBlock2D"),
    up_block_types=("AttnUpBlock2D", "AttnUpBlock2D"),
    attention_head_dim=8,
    add_attention=False,
    dropout=0.1,
  ),
  # class-conditional, FiLM time conditioning: the middle attention has no GroupNorm
  "class_scale_shift": dict(
    block_out_channels=(16, 32),
    layers_per_block=1,
    down_block_types=("DownBlock2D", "AttnDownBlock2D"),
    up_block_types=("AttnUpBlock2D", "UpBlock2D"),
    num_class_embeds=5,
    resnet_time_scale_shift="scale_shift",
    time_embedding_dim=48,
    attention_head_dim=16,
  ),
  # scale_shift with the middle attention's GroupNorm (attn_norm_num_groups)
  "scale_shift_attn_groups": dict(
    block_out_channels=(16, 16, 32),
    layers_per_block=1,
    down_block_types=("AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "UpBlock2D", "AttnUpBlock2D"),
    resnet_time_scale_shift="scale_shift",
    attn_norm_num_groups=8,
    flip_sin_to_cos=False,
    freq_shift=1,
  ),
}


def _diffusers_unet(seed: int = 0, **kw):
  """A UNet2DModel with every weight moved off its initial value (no zero or unit tensor hides a mix-up)."""
  torch.manual_seed(seed)
  m = diffusers.UNet2DModel(**{**TINY, **kw}).eval()
  with torch.no_grad():
    for p in m.parameters():
      p.add_(0.1 * torch.randn_like(p))
  return m


def _inputs(m, batch: int = 3, seed: int = 1):
  g = torch.Generator().manual_seed(seed)
  c, s = m.config.in_channels, m.config.sample_size
  x = torch.randn(batch, c, s, s, generator=g)
  t = torch.tensor([0, 417, 999][:batch])
  y = torch.arange(batch) % m.config.num_class_embeds if m.config.num_class_embeds else None
  return x, t, y


def _torch_out(m, x, t, y):
  with torch.no_grad():
    return m(x, t, class_labels=y).sample.numpy()


def _jax_out(model, variables, x, t, y):
  args = [jnp.asarray(x.numpy().transpose(0, 2, 3, 1)), jnp.asarray(t.numpy())]
  if y is not None:
    args.append(jnp.asarray(y.numpy()))
  out = jax.jit(model.apply)(variables, *args)
  return np.asarray(out).transpose(0, 3, 1, 2)


def _max_diff(a, b):
  return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_unet_round_trip_matches_diffusers(layout, tmp_path):
  m = _diffusers_unet(**LAYOUTS[layout])
  m.save_pretrained(tmp_path / "src")
  model, variables = load_diffusers_unet(str(tmp_path / "src"))
  assert isinstance(model, UNet)
  assert count_params(variables) == sum(p.numel() for p in m.parameters()) + (
    m.config.time_embedding_dim or 4 * m.config.block_out_channels[0]
  ) * bool(m.config.num_class_embeds)  # + jaxdiff's null-class row
  x, t, y = _inputs(m)
  want = _torch_out(m, x, t, y)
  got = _jax_out(model, variables, x, t, y)
  assert np.abs(want).max() > 0.1
  assert _max_diff(got, want) < 2e-5, _max_diff(got, want)

  save_diffusers_unet(model, variables, str(tmp_path / "back"), sample_size=8)
  back = diffusers.UNet2DModel.from_pretrained(str(tmp_path / "back")).eval()
  src, dst = m.state_dict(), back.state_dict()
  assert sorted(src) == sorted(dst)
  for k in src:
    np.testing.assert_array_equal(src[k].numpy(), dst[k].numpy(), err_msg=k)
  for k, v in LAYOUTS[layout].items():
    assert back.config[k] == (list(v) if isinstance(v, tuple) else v), k
  np.testing.assert_array_equal(_torch_out(back, x, t, y), want)


def test_jaxdiff_unet_saves_for_diffusers(tmp_path):
  """A jaxdiff-native UNet (attention by resolution, two heads, learned sigma, a trained null class)
  becomes a UNet2DModel with the same outputs; the null class is label num_classes there too."""
  model = create_model(
    {
      "model": dict(
        base_channels=16,
        channel_mult=(1, 2),
        num_res_blocks=1,
        attention_resolutions=(4,),
        num_heads=2,
        num_groups=8,
        in_channels=1,
        learn_sigma=True,
        num_classes=3,
        use_scale_shift_norm=True,
      )
    }
  )
  x = jnp.asarray(np.random.default_rng(0).standard_normal((4, 8, 8, 1)), jnp.float32)
  t = jnp.array([1, 10, 500, 999])
  y = jnp.array([0, 1, 2, 3])  # 3 = the null class
  abstract = jax.eval_shape(model.init, jax.random.key(0), x, t, y)
  rng = np.random.default_rng(1)
  params = jax.tree_util.tree_map(
    lambda a: jnp.asarray(
      0.2 * rng.standard_normal(a.shape) + (1.0 if a.shape == (a.shape[0],) else 0.0), a.dtype
    ),
    abstract,
  )
  save_diffusers_unet(model, params, str(tmp_path / "unet"))
  cfg = json.loads((tmp_path / "unet" / "config.json").read_text())
  assert cfg["num_class_embeds"] == 4 and cfg["attention_head_dim"] == 16 and cfg["out_channels"] == 2
  assert cfg["down_block_types"] == ["DownBlock2D", "AttnDownBlock2D"]
  m = diffusers.UNet2DModel.from_pretrained(str(tmp_path / "unet")).eval()
  want = _torch_out(
    m,
    torch.tensor(np.asarray(x).transpose(0, 3, 1, 2)),
    torch.tensor(np.asarray(t)),
    torch.tensor(np.asarray(y)),
  )
  got = np.asarray(jax.jit(model.apply)(params, x, t, y)).transpose(0, 3, 1, 2)
  assert _max_diff(got, want) < 2e-5, _max_diff(got, want)
  # and back: the same jaxdiff UNet, its trained null class (label 3) in place
  again, variables = load_diffusers_unet(str(tmp_path / "unet"))
  assert again.num_classes == 3 and again.attention_levels == (1,) and again.head_dim == 16
  jax.tree_util.tree_map(np.testing.assert_array_equal, variables["params"], jax.device_get(params["params"]))


@pytest.mark.parametrize("name", sorted(DDPM_CONFIGS))
def test_ddpm_checkpoint_layouts(name):
  """The full-size DDPM networks (35.7M / 113.7M parameters, DDPM paper's Table / appendix B): every
  tensor of diffusers' UNet2DModel (built on torch's meta device) has its place and shape in jaxdiff's UNet."""
  cfg = DDPM_CONFIGS[name]
  with torch.device("meta"):
    m = diffusers.UNet2DModel(**{k: v for k, v in cfg.items() if not k.startswith("_")})
  shapes = {k: tuple(v.shape) for k, v in m.state_dict().items()}
  tensors = {k: np.broadcast_to(np.float32(0), s) for k, s in shapes.items()}  # no memory
  model = create_model({"model": unet_model_config(cfg)})
  params = unet_params_from_diffusers(model, tensors)
  n = count_params(params)
  assert n == sum(np.prod(s) for s in shapes.values())
  assert round(n / 1e6, 1) == {"google/ddpm-cifar10-32": 35.7}.get(name, 113.7)
  assert (
    unet_to_diffusers_config(model, params, cfg["sample_size"])["down_block_types"] == cfg["down_block_types"]
  )


@pytest.mark.slow
def test_ddpm_cifar10_network_matches_diffusers(tmp_path):
  """The full DDPM CIFAR-10 network with random weights, end to end (35.7M parameters)."""
  cfg = {k: v for k, v in DDPM_CONFIGS["google/ddpm-cifar10-32"].items() if not k.startswith("_")}
  torch.manual_seed(0)
  m = diffusers.UNet2DModel(**cfg).eval()
  with torch.no_grad():
    for p in m.parameters():
      p.add_(0.02 * torch.randn_like(p))
  m.save_pretrained(tmp_path)
  model, variables = load_diffusers_unet(str(tmp_path))
  x, t, y = _inputs(m, batch=2)
  assert _max_diff(_jax_out(model, variables, x, t, y), _torch_out(m, x, t, y)) < 1e-4


REFUSED = [
  ("time_embedding_type", "fourier"),
  ("time_embedding_type", "learned"),
  ("center_input_sample", True),
  ("down_block_types", ["SkipDownBlock2D", "DownBlock2D"]),
  ("down_block_types", ["CrossAttnDownBlock2D", "DownBlock2D"]),
  ("up_block_types", ["AttnUpBlock2D", "AttnUpBlock2D"]),  # attention only in the decoder
  ("block_out_channels", [16, 24]),
  ("resnet_time_scale_shift", "spatial"),
  ("mid_block_scale_factor", 1.414),
  ("mid_block_type", None),
  ("class_embed_type", "timestep"),
  ("act_fn", "gelu"),
  ("downsample_type", "resnet"),
  ("attention_head_dim", 12),
  ("norm_num_groups", 6),
  ("attn_norm_num_groups", 4),
  ("resnet_pre_norm", False),  # a field UNet2DModel does not have
  ("_class_name", "UNet2DConditionModel"),
]


@pytest.mark.parametrize("field,value", REFUSED)
def test_unsupported_layouts_are_refused_by_name(field, value):
  base = {**TINY, **LAYOUTS["ddpm"], "block_out_channels": [16, 32], "layers_per_block": 1}
  base.update(
    down_block_types=["DownBlock2D", "AttnDownBlock2D"], up_block_types=["AttnUpBlock2D", "UpBlock2D"]
  )
  unet_model_config(base)  # the base itself converts
  field_name = field.split("[")[0]
  with pytest.raises(ConfigError, match=field_name):
    unet_model_config({**base, field: value})


def test_jaxdiff_only_features_are_refused_on_save():
  for fields, name in [
    (dict(linear_attention_resolutions=(8,)), "linear_attention_resolutions"),
    (dict(context_dim=8), "context_dim"),
    (dict(resblock_updown=True), "resblock_updown"),
    (dict(time_input="log_sigma"), "time_input"),
  ]:
    model = UNet(base_channels=16, channel_mult=(1, 2), num_groups=8, **fields)
    with pytest.raises(ConfigError, match=name):
      unet_to_diffusers_config(model, {})


# ---------------------------------------------------------------- schedulers


@pytest.mark.parametrize(
  "beta_schedule,start,end",
  [("linear", 1e-4, 0.02), ("scaled_linear", 0.00085, 0.012), ("squaredcos_cap_v2", 1e-4, 0.02)],
)
def test_scheduler_betas_match(beta_schedule, start, end):
  cls = diffusers.DDIMScheduler
  sched = cls(num_train_timesteps=1000, beta_schedule=beta_schedule, beta_start=start, beta_end=end)
  over = scheduler_overrides(dict(sched.config, _class_name="DDIMScheduler"))
  config = with_defaults(over)
  d = config.diffusion
  ours = schedules.get_schedule(
    d.schedule,
    d.num_timesteps,
    **({} if d.schedule == "cosine" else dict(beta_start=d.beta_start, beta_end=d.beta_end)),
  )
  np.testing.assert_allclose(np.asarray(ours.betas), sched.betas.numpy(), rtol=2e-6, atol=1e-9)
  np.testing.assert_allclose(np.asarray(ours.alphas_cumprod), sched.alphas_cumprod.numpy(), rtol=2e-5)
  assert (
    config.sample.sampler == "ddim" and config.sample.spacing == "leading" and config.sample.clip_x0 == 1.0
  )
  back = cls.from_config(config_to_scheduler(config))
  for k in (
    "beta_schedule",
    "beta_start",
    "beta_end",
    "num_train_timesteps",
    "prediction_type",
    "timestep_spacing",
    "clip_sample",
  ):
    assert back.config[k] == sched.config[k], k


def test_scheduler_fields_map():
  over = scheduler_overrides(
    {"_class_name": "DDPMScheduler", "prediction_type": "v_prediction", "timestep_spacing": "trailing",
     "clip_sample": False, "num_train_timesteps": 500, "rescale_betas_zero_snr": True}
  )  # fmt: skip
  assert over["diffusion"]["prediction"] == "v" and over["diffusion"]["num_timesteps"] == 500
  assert over["diffusion"]["rescale_zero_terminal_snr"] is True
  assert over["sample"] == dict(
    sampler="ddpm", num_steps=500, eta=0.0, spacing="trailing", grid="", clip_x0=0.0
  )
  assert (
    scheduler_overrides({"_class_name": "DDIMScheduler", "prediction_type": "sample"})["diffusion"][
      "prediction"
    ]
    == "x0"
  )
  for field, value in [
    ("trained_betas", [0.1, 0.2]),
    ("thresholding", True),
    ("steps_offset", 1),
    ("set_alpha_to_one", False),
    ("beta_schedule", "exp"),
    ("prediction_type", "flow"),
    ("timestep_spacing", "karras"),
    ("_class_name", "LMSDiscreteScheduler"),
    ("use_karras_sigmas", True),
    ("variance_type", "learned"),
    ("variance_type", "fixed_large"),
  ]:
    cls = "DDPMScheduler" if field == "variance_type" else "DDIMScheduler"
    with pytest.raises(ConfigError, match=field):
      scheduler_overrides({"_class_name": cls, field: value})


def _diffusers_ddim(unet, scheduler, x, n, **step_kw):
  """DDIMPipeline's loop (eta 0) from the given starting noise."""
  scheduler.set_timesteps(n)
  for t in scheduler.timesteps:
    with torch.no_grad():
      out = unet(x, t).sample
    x = scheduler.step(out, t, x, eta=0.0, **step_kw).prev_sample
  return x.numpy()


def _pipeline_folder(path, layout, **sched_kw):
  unet = _diffusers_unet(**{**LAYOUTS[layout], "in_channels": 1, "out_channels": 1})
  sched = diffusers.DDIMScheduler(num_train_timesteps=1000, **sched_kw)
  diffusers.DDIMPipeline(unet=unet, scheduler=sched).save_pretrained(path)
  return unet, sched


@pytest.mark.parametrize(
  "sched_kw",
  [
    dict(beta_schedule="linear", clip_sample=False),
    dict(beta_schedule="linear", clip_sample=True),  # DDIMPipeline's use_clipped_model_output=False
    pytest.param(
      dict(
        beta_schedule="squaredcos_cap_v2",
        prediction_type="v_prediction",
        timestep_spacing="trailing",
        clip_sample=False,
      ),
      marks=pytest.mark.slow,
    ),
  ],
)
def test_imported_pipeline_samples_as_diffusers(sched_kw, tmp_path):
  unet, sched = _pipeline_folder(tmp_path / "pipe", "ddpm", **sched_kw)
  import_diffusers(str(tmp_path / "pipe"), str(tmp_path / "wd"))
  config, model, schedule, params, step = restore_model(str(tmp_path / "wd"))
  assert step == 0 and config.sample.sampler == "ddim"
  n = 8
  x = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(3))
  want = _diffusers_ddim(unet, sched, x, n)
  got = sample_from_config(
    config,
    model,
    schedule,
    params,
    jax.random.key(0),
    2,
    num_steps=n,
    x_init=jnp.asarray(x.numpy().transpose(0, 2, 3, 1)),
  )
  got = np.asarray(got).transpose(0, 3, 1, 2)
  # with clipping, an x0 inside the range keeps the float32 rounding of (x - sigma eps) / alpha,
  # amplified by 1 / alpha (~160 at the top step) instead of cancelling in alpha' x0 + sigma' eps
  tol = 1e-3 if sched_kw["clip_sample"] else 1e-4
  assert _max_diff(got, want) < tol * max(1.0, np.abs(want).max()), _max_diff(got, want)
  if sched_kw["clip_sample"]:  # the clipping matters: the other eps gives other samples
    assert config.sample.clipped_eps is False
    other = _diffusers_ddim(unet, sched, x, n, use_clipped_model_output=True)
    assert _max_diff(other, want) > 1e-2


def _run(*args, timeout=600):
  r = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)
  assert r.returncode == 0, r.stderr[-3000:]
  return r


def test_import_export_commands(tmp_path, capsys):
  """python -m jaxdiff.interop import / export (in process): the exported pipeline holds the same weights."""
  unet, _ = _pipeline_folder(tmp_path / "pipe", "ddpm", beta_schedule="linear")
  wd, out = str(tmp_path / "wd"), str(tmp_path / "out")
  assert interop_main(["import", str(tmp_path / "pipe"), wd, "--data=digits"]) == 0
  assert interop_main(["import", str(tmp_path / "pipe"), wd]) == 2  # never over an existing run
  assert "not empty" in capsys.readouterr().err
  assert os.path.exists(os.path.join(wd, "checkpoints", "0"))
  assert interop_main(["export", wd, out]) == 0
  pipe = diffusers.DDIMPipeline.from_pretrained(out)
  for k, v in unet.state_dict().items():
    np.testing.assert_array_equal(pipe.unet.state_dict()[k].numpy(), v.numpy(), err_msg=k)
  assert pipe.scheduler.config.beta_schedule == "linear" and pipe.scheduler.config.clip_sample


@pytest.mark.slow
def test_imported_workdir_samples_and_fine_tunes_through_the_clis(tmp_path):
  """import -> sample.py -> train.py (fine-tunes from step 0, 2 steps) -> export of the new step."""
  unet, _ = _pipeline_folder(tmp_path / "pipe", "ddpm", beta_schedule="linear")
  wd = str(tmp_path / "wd")
  _run("-m", "jaxdiff.interop", "import", str(tmp_path / "pipe"), wd, "--data=digits")
  _run("sample.py", f"--workdir={wd}", "--num_samples=2", "--num_steps=2", f"--output={tmp_path / 'gen'}")
  assert any(f.endswith(".npz") for f in os.listdir(tmp_path / "gen"))
  _run(
    "train.py", f"--config={wd}/config.py", f"--workdir={wd}", "--config.train.num_steps=2",
    "--config.train.batch_size=4", "--config.train.log_every=1", "--config.train.checkpoint_every=2",
    "--config.train.sample_every=0", "--config.optim.warmup_steps=0", "--config.train.compilation_cache_dir=none",
  )  # fmt: skip
  assert sorted(int(s) for s in os.listdir(os.path.join(wd, "checkpoints")) if s.isdigit()) == [0, 2]
  _run("-m", "jaxdiff.interop", "export", wd, str(tmp_path / "out"), "--params=raw")
  tuned = diffusers.UNet2DModel.from_pretrained(str(tmp_path / "out" / "unet"))
  changed = [k for k, v in unet.state_dict().items() if not torch.equal(tuned.state_dict()[k], v)]
  assert changed  # step 2's weights, moved by the fine-tuning


def test_import_refuses_existing_run_and_missing_size(tmp_path):
  m = _diffusers_unet(**LAYOUTS["ddpm"])
  m.save_pretrained(tmp_path / "unet")
  cfg = json.loads((tmp_path / "unet" / "config.json").read_text())
  cfg["sample_size"] = None
  (tmp_path / "unet" / "config.json").write_text(json.dumps(cfg))
  with pytest.raises(ConfigError, match="sample_size"):
    import_diffusers(str(tmp_path / "unet"), str(tmp_path / "wd"))
  os.makedirs(tmp_path / "wd2" / "checkpoints")
  with pytest.raises(WorkdirError):
    import_diffusers(str(tmp_path / "unet"), str(tmp_path / "wd2"), image_size=8)


# ---------------------------------------------------------------- DiT

DIT_TINY = dict(
  num_attention_heads=2,
  attention_head_dim=16,
  in_channels=3,
  out_channels=6,
  num_layers=2,
  sample_size=8,
  patch_size=2,
  num_embeds_ada_norm=5,
)


def _diffusers_dit(seed: int = 0, tie: bool = True, **kw):
  """A DiTTransformer2DModel with perturbed weights; `tie` gives every block block 0's time / class
  embedders, as in every converted DiT checkpoint."""
  torch.manual_seed(seed)
  m = diffusers.DiTTransformer2DModel(**{**DIT_TINY, **kw}).eval()
  with torch.no_grad():
    for p in m.parameters():
      p.add_(0.1 * torch.randn_like(p))
    if tie:
      sd = m.state_dict()
      for k in sd:
        if ".norm1.emb." in k and not k.startswith("transformer_blocks.0."):
          sd[k].copy_(sd["transformer_blocks.0." + k.split(".", 2)[2]])
  return m


def _dit_inputs(m, batch: int = 3):
  g = torch.Generator().manual_seed(1)
  x = torch.randn(batch, m.config.in_channels, m.config.sample_size, m.config.sample_size, generator=g)
  return x, torch.tensor([0, 417, 999][:batch]), torch.arange(batch) % (m.config.num_embeds_ada_norm + 1)


# The DiT's 256 sinusoid frequencies, computed by XLA's and torch's float32 exp, differ by an ulp here
# and there; times up to 999 turn that into ~1e-5 relative at the output (see jaxdiff.interop.dit).
DIT_RTOL = 3e-5


@pytest.mark.parametrize("norm_eps", [1e-5, 1e-6])
def test_dit_round_trip_matches_diffusers(norm_eps, tmp_path):
  m = _diffusers_dit(norm_eps=norm_eps)
  m.save_pretrained(tmp_path / "src")
  model, variables = load_diffusers_dit(str(tmp_path / "src"))
  assert model.learn_sigma and model.num_classes == 5 and model.hidden_size == 32
  x, t, y = _dit_inputs(m)  # y includes the null class 5
  want = _torch_out(m, x, t, y)
  got = _jax_out(model, variables, x, t, y)
  assert _max_diff(got, want) < DIT_RTOL * np.abs(want).max(), (_max_diff(got, want), np.abs(want).max())
  save_diffusers_dit(model, variables, str(tmp_path / "back"), sample_size=8)
  back = diffusers.DiTTransformer2DModel.from_pretrained(str(tmp_path / "back")).eval()
  src, dst = m.state_dict(), back.state_dict()
  assert sorted(src) == sorted(dst)
  for k in src:
    np.testing.assert_array_equal(src[k].numpy(), dst[k].numpy(), err_msg=k)
  assert back.config.norm_eps == 1e-6  # jaxdiff's LayerNorm epsilon
  # the saved model and jaxdiff's now agree as closely as the embedding's float32 noise allows
  assert _max_diff(_torch_out(back, x, t, y), got) < DIT_RTOL * np.abs(want).max()


def test_jaxdiff_dit_saves_for_diffusers(tmp_path):
  """An unconditional jaxdiff DiT becomes a DiTTransformer2DModel with a zero class table."""
  model = create_model(
    {
      "model": dict(
        name="dit", patch_size=2, hidden_size=32, depth=2, num_heads=4, in_channels=2, learn_sigma=True
      )
    }
  )
  x = jnp.asarray(np.random.default_rng(0).standard_normal((2, 4, 4, 2)), jnp.float32)
  t = jnp.array([5, 900])
  rng = np.random.default_rng(1)
  abstract = jax.eval_shape(model.init, jax.random.key(0), x, t)
  params = jax.tree_util.tree_map(
    lambda a: jnp.asarray(0.2 * rng.standard_normal(a.shape), a.dtype), abstract
  )
  save_diffusers_dit(model, params, str(tmp_path / "dit"), sample_size=4)
  m = diffusers.DiTTransformer2DModel.from_pretrained(str(tmp_path / "dit")).eval()
  assert m.config.num_embeds_ada_norm == 1 and m.config.out_channels == 4
  xt = torch.tensor(np.asarray(x).transpose(0, 3, 1, 2))
  want = _torch_out(m, xt, torch.tensor(np.asarray(t)), torch.zeros(2, dtype=torch.long))
  got = np.asarray(jax.jit(model.apply)(params, x, t)).transpose(0, 3, 1, 2)
  assert _max_diff(got, want) < DIT_RTOL * np.abs(want).max()


def test_dit_refusals(tmp_path):
  m = _diffusers_dit(tie=False)
  m.save_pretrained(tmp_path)
  with pytest.raises(CheckpointError, match="norm1.emb"):
    load_diffusers_dit(str(tmp_path))
  for field, value in [
    ("activation_fn", "geglu"),
    ("norm_type", "ada_norm"),
    ("norm_elementwise_affine", True),
    ("attention_bias", False),
    ("num_embeds_ada_norm", None),
    ("caption_channels", 4096),
  ]:
    with pytest.raises(ConfigError, match=field):
      dit_model_config({**DIT_TINY, field: value})
  dit = create_model(
    {"model": dict(name="dit", patch_size=2, hidden_size=32, depth=1, num_heads=2, mlp_ratio=2.0)}
  )
  with pytest.raises(ConfigError, match="mlp_ratio"):
    save_diffusers_dit(dit, {"params": {}}, str(tmp_path / "x"))


def test_dit_folder_imports_and_exports(tmp_path):
  m = _diffusers_dit()
  m.save_pretrained(tmp_path / "dit")
  config = import_diffusers(str(tmp_path / "dit"), str(tmp_path / "wd"))
  assert config.model.name == "dit" and config.data.image_size == 8 and config.data.channels == 3
  export_workdir(str(tmp_path / "wd"), str(tmp_path / "out"))
  back = diffusers.DiTTransformer2DModel.from_pretrained(str(tmp_path / "out" / "transformer"))
  for k, v in m.state_dict().items():
    np.testing.assert_array_equal(back.state_dict()[k].numpy(), v.numpy(), err_msg=k)


def test_sigmoid_chain_exports_only_as_ddpm():
  config = with_defaults({"diffusion": {"schedule": "sigmoid"}})
  with pytest.raises(ConfigError, match="sigmoid"):
    config_to_scheduler(config)
  config.sample.sampler = "ddpm"
  sched = diffusers.DDPMScheduler.from_config(config_to_scheduler(config))
  d = config.diffusion
  ours = schedules.get_schedule("sigmoid", d.num_timesteps, beta_start=d.beta_start, beta_end=d.beta_end)
  np.testing.assert_allclose(np.asarray(ours.betas), sched.betas.numpy(), rtol=2e-6, atol=1e-9)


# ---------------------------------------------------------------- more schedulers


def _diffusers_loop(unet, scheduler, x, n):
  """A pipeline's loop with scale_model_input and init_noise_sigma (Euler / DPM-Solver / flow
  matching) from the given unit noise `x`."""
  scheduler.set_timesteps(n)
  x = x * getattr(scheduler, "init_noise_sigma", 1.0)  # flow matching has neither this nor scaling
  scale = getattr(scheduler, "scale_model_input", lambda x, t: x)
  for t in scheduler.timesteps:
    with torch.no_grad():
      out = unet(scale(x, t), t).sample
    x = scheduler.step(out, t, x).prev_sample
  return x.numpy()


def _jaxdiff_from(wd, x, n, key=0, **kw):
  config, model, schedule, params, _ = restore_model(wd)
  got = sample_from_config(
    config, model, schedule, params, jax.random.key(key), x.shape[0], num_steps=n,
    x_init=jnp.asarray(x.numpy().transpose(0, 2, 3, 1)), **kw,
  )  # fmt: skip
  return config, np.asarray(got).transpose(0, 3, 1, 2)


def _save_pipeline(path, unet, scheduler, pipeline=diffusers.DDPMPipeline):
  pipeline(unet=unet, scheduler=scheduler).save_pretrained(path)


SCHEDULER_CASES = {
  "dpmpp_2m": (diffusers.DPMSolverMultistepScheduler, dict(timestep_spacing="trailing"), "vp"),
  "dpmpp_3m": (
    diffusers.DPMSolverMultistepScheduler,
    dict(timestep_spacing="trailing", solver_order=3),
    "vp",
  ),
  "euler": (diffusers.EulerDiscreteScheduler, dict(timestep_spacing="leading"), "vp"),
  "flow": (diffusers.FlowMatchEulerDiscreteScheduler, dict(shift=3.0), "flow"),
}


@pytest.mark.parametrize("case", sorted(SCHEDULER_CASES))
def test_more_schedulers_import_and_sample_as_diffusers(case, tmp_path):
  """DPM-Solver++ (2M, 3M), Euler and flow-matching Euler pipelines import with the matching
  process, prediction and sampler, and sample what diffusers samples from the same noise."""
  cls, kw, process = SCHEDULER_CASES[case]
  unet = _diffusers_unet(**{**LAYOUTS["ddpm"], "in_channels": 1, "out_channels": 1})
  sched = cls(**kw)
  _save_pipeline(tmp_path / "pipe", unet, sched)
  import_diffusers(str(tmp_path / "pipe"), str(tmp_path / "wd"))
  n = 6
  x = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(3))
  want = _diffusers_loop(unet, cls.from_config(sched.config), x, n)
  # the same start: diffusers' x_T = x * init_noise_sigma is x in the VP frame (Euler's leading
  # spacing: init_noise_sigma = (sigma^2 + 1)^0.5 = 1 / alpha; the others: 1)
  config, got = _jaxdiff_from(str(tmp_path / "wd"), x, n)
  assert config.diffusion.process == process
  assert config.sample.sampler == ("euler" if case == "flow" else case)
  assert config.diffusion.prediction == ("flow" if case == "flow" else "eps")
  assert _max_diff(got, want) < 1e-4 * max(1.0, np.abs(want).max()), _max_diff(got, want)


@pytest.mark.parametrize("variance", ["fixed_small", "learned_range"])
def test_ddpm_pipeline_samples_as_diffusers_with_the_same_noise(variance, tmp_path, monkeypatch):
  """DDPMPipeline (100-step chain), fixed_small and learned_range variance: diffusers' step noise is
  replaced by jaxdiff's (fold_in(split(key)[1], step)), so the two runs must agree."""
  out = 2 if variance == "learned_range" else 1
  unet = _diffusers_unet(**{**LAYOUTS["ddpm"], "in_channels": 1, "out_channels": out})
  sched = diffusers.DDPMScheduler(num_train_timesteps=100, variance_type=variance, clip_sample=False)
  _save_pipeline(tmp_path / "pipe", unet, sched)
  config = import_diffusers(str(tmp_path / "pipe"), str(tmp_path / "wd"))
  assert config.sample.sampler == "ddpm" and config.model.learn_sigma == (variance == "learned_range")
  x = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(3))
  k_steps = jax.random.split(jax.random.key(5))[1]
  draws = [
    torch.from_numpy(np.asarray(jax.random.normal(jax.random.fold_in(k_steps, i), (2, 8, 8, 1))).transpose(0, 3, 1, 2).copy())
    for i in range(100)
  ]  # fmt: skip
  monkeypatch.setattr(diffusers.schedulers.scheduling_ddpm, "randn_tensor", lambda *a, **k: draws.pop(0))
  want = _diffusers_loop(unet, diffusers.DDPMScheduler.from_config(sched.config), x, 100)
  assert len(draws) == 1  # every step but the last drew noise
  _, got = _jaxdiff_from(str(tmp_path / "wd"), x, 100, key=5)
  assert _max_diff(got, want) < 2e-4 * max(1.0, np.abs(want).max()), _max_diff(got, want)


@pytest.mark.parametrize("case", ["dpmpp_2m", "flow"])
def test_dpm_solver_and_flow_workdirs_export(case, tmp_path):
  """A DPM-Solver workdir exports with DPMSolverMultistepScheduler, a flow workdir with
  FlowMatchEulerDiscreteScheduler; the exported pipeline samples what jaxdiff samples."""
  cls, kw, _ = SCHEDULER_CASES[case]
  unet = _diffusers_unet(**{**LAYOUTS["ddpm"], "in_channels": 1, "out_channels": 1})
  _save_pipeline(tmp_path / "pipe", unet, cls(**kw))
  import_diffusers(str(tmp_path / "pipe"), str(tmp_path / "wd"))
  export_workdir(str(tmp_path / "wd"), str(tmp_path / "out"))
  pipe = diffusers.DDPMPipeline.from_pretrained(str(tmp_path / "out"))
  assert type(pipe.scheduler) is cls
  for k, v in kw.items():
    assert pipe.scheduler.config[k] == v, k
  x = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(4))
  want = _diffusers_loop(pipe.unet, pipe.scheduler, x, 5)
  _, got = _jaxdiff_from(str(tmp_path / "wd"), x, 5)
  assert _max_diff(got, want) < 1e-4 * max(1.0, np.abs(want).max())


# ---------------------------------------------------------------- EDM schedulers


def _edm_loop(unet, scheduler, x, n):
  """The EDM scheduler loop (as diffusers' pipelines run it: scale_model_input, the UNet fed the
  scheduler's timestep c_noise = ln(sigma)/4, step) from the state `x` at sigma_max."""
  scheduler.set_timesteps(n)
  for t in scheduler.timesteps:
    with torch.no_grad():
      out = unet(scheduler.scale_model_input(x, t), t).sample
    x = scheduler.step(out, t, x).prev_sample
  return x.numpy()


EDM_CASES = {
  "euler": (diffusers.EDMEulerScheduler, {}, "euler", ""),
  "euler_exponential_v": (
    diffusers.EDMEulerScheduler,
    dict(sigma_schedule="exponential", prediction_type="v_prediction", sigma_data=0.7, sigma_max=40.0),
    "euler",
    "logsnr",
  ),
  "dpmpp_2m": (diffusers.EDMDPMSolverMultistepScheduler, dict(rho=5.0, sigma_min=0.01), "dpmpp_2m", ""),
  "dpmpp_3m_exponential": (
    diffusers.EDMDPMSolverMultistepScheduler,
    dict(solver_order=3, sigma_schedule="exponential", prediction_type="v_prediction"),
    "dpmpp_3m",
    "logsnr",
  ),
}


def _edm_noise(sigma_max, seed=3):
  return torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(seed)) * sigma_max


@pytest.mark.parametrize(
  "case",
  [c if c in ("euler", "dpmpp_2m") else pytest.param(c, marks=pytest.mark.slow) for c in sorted(EDM_CASES)],
)
def test_edm_pipelines_import_and_sample_as_diffusers(case, tmp_path):
  """EDMEulerScheduler / EDMDPMSolverMultistepScheduler pipelines (Karras and exponential sigmas,
  epsilon and v_prediction) import as EDM workdirs whose network reads c_noise as diffusers feeds it,
  and sample what diffusers samples from the same state at sigma_max."""
  cls, kw, sampler, grid = EDM_CASES[case]
  unet = _diffusers_unet(**{**LAYOUTS["ddpm"], "in_channels": 1, "out_channels": 1})
  sched = cls(**kw)
  _save_pipeline(tmp_path / "pipe", unet, sched)
  import_diffusers(str(tmp_path / "pipe"), str(tmp_path / "wd"))
  n = 7
  x = _edm_noise(sched.config.sigma_max)
  want = _edm_loop(unet, cls.from_config(sched.config), x, n)
  config, got = _jaxdiff_from(str(tmp_path / "wd"), x, n)
  d = config.diffusion
  assert (d.process, d.prediction, config.model.time_input) == ("edm", "edm", "c_noise")
  assert (config.sample.sampler, config.sample.grid, config.sample.clip_x0) == (sampler, grid, 0.0)
  for field in ("sigma_min", "sigma_max", "sigma_data", "rho"):
    assert d[field] == sched.config[field], field
  rel = _max_diff(got, want) / max(1.0, np.abs(want).max())
  print(f"EDM import {case}: max |jaxdiff - diffusers| / scale = {rel:.2g}")  # the guide's figures (-s)
  assert rel < 2e-5, rel


def _edm_workdir(path, sampler, grid=""):
  """A jaxdiff-native EDM workdir (a UNet reading c_noise, random weights) at step 0."""
  from jaxdiff.interop.workdir import write_workdir

  config = with_defaults(
    {
      "model": dict(
        base_channels=16, channel_mult=(1, 2), num_res_blocks=1, attention_resolutions=(4,), num_groups=8,
        num_classes=0, conv_resample=True, time_input="c_noise",
      ),
      "data": dict(image_size=8, channels=1, num_classes=0),
      "diffusion": dict(process="edm", prediction="edm", sigma_data=0.6, sigma_max=60.0, rho=6.0),
      "sample": dict(sampler=sampler, grid=grid, clip_x0=0.0),
    }
  )  # fmt: skip
  model = create_model(config)
  x = jnp.zeros((1, 8, 8, 1))
  abstract = jax.eval_shape(model.init, jax.random.key(0), x, jnp.ones((1,)))["params"]
  rng = np.random.default_rng(1)
  params = jax.tree_util.tree_map(
    lambda a: jnp.asarray(0.2 * rng.standard_normal(a.shape) + (1.0 if a.ndim == 1 else 0.0), a.dtype),
    abstract,
  )
  write_workdir(str(path), config, model.apply, params)


@pytest.mark.parametrize("sampler,grid,cls", [
  ("euler", "", diffusers.EDMEulerScheduler),
  pytest.param("dpmpp_2m", "logsnr", diffusers.EDMDPMSolverMultistepScheduler, marks=pytest.mark.slow),
])  # fmt: skip
def test_edm_workdirs_export_with_diffusers_edm_schedulers(sampler, grid, cls, tmp_path):
  """A jaxdiff EDM workdir whose network reads c_noise exports as unet/ + an EDM scheduler (no
  pipeline class runs EDM's input scaling); diffusers' loop over it samples what jaxdiff samples."""
  _edm_workdir(tmp_path / "wd", sampler, grid)
  export_workdir(str(tmp_path / "wd"), str(tmp_path / "out"))
  assert sorted(os.listdir(tmp_path / "out")) == ["scheduler", "unet"]
  unet = diffusers.UNet2DModel.from_pretrained(str(tmp_path / "out" / "unet")).eval()
  sched = cls.from_pretrained(str(tmp_path / "out" / "scheduler"))
  assert (sched.config.sigma_data, sched.config.sigma_max, sched.config.rho) == (0.6, 60.0, 6.0)
  assert sched.config.sigma_schedule == ("exponential" if grid == "logsnr" else "karras")
  x = _edm_noise(60.0, seed=4)
  want = _edm_loop(unet, sched, x, 6)
  _, got = _jaxdiff_from(str(tmp_path / "wd"), x, 6)
  rel = _max_diff(got, want) / max(1.0, np.abs(want).max())
  print(f"EDM export {sampler} grid={grid!r}: max |jaxdiff - diffusers| / scale = {rel:.2g}")
  assert rel < 2e-5, rel
  import_diffusers(str(tmp_path / "out"), str(tmp_path / "again"))  # and back: the same samples
  _, again = _jaxdiff_from(str(tmp_path / "again"), x, 6)
  np.testing.assert_array_equal(again, got)


def test_edm_exports_refuse_what_diffusers_cannot_run_naming_the_field():
  base = {"diffusion": {"process": "edm", "prediction": "edm"}, "sample": {"clip_x0": 0.0}}
  config = with_defaults(base)  # time_input "auto": jaxdiff's log_sigma, 1000 ln(sigma)/4
  with pytest.raises(ConfigError, match="time_input='auto'.*ln\\(sigma\\)/4.*'c_noise'"):
    config_to_scheduler(config)
  config.model.time_input = "c_noise"
  assert config_to_scheduler(config)["_class_name"] == "EDMEulerScheduler"
  for field, value in [("sample.clip_x0", 1.0), ("sample.grid", "uniform"), ("diffusion.prediction", "x0")]:
    bad = with_defaults(base)
    bad.model.time_input = "c_noise"
    section, name = field.split(".")
    bad[section][name] = value
    with pytest.raises(ConfigError, match=field):
      config_to_scheduler(bad)
  for cls, field, value in [
    ("EDMEulerScheduler", "final_sigmas_type", "sigma_min"),
    ("EDMEulerScheduler", "sigma_schedule", "linear"),
    ("EDMDPMSolverMultistepScheduler", "prediction_type", "sample"),
    ("EDMDPMSolverMultistepScheduler", "solver_type", "heun"),
    ("EDMDPMSolverMultistepScheduler", "algorithm_type", "dpmsolver"),
    ("EDMDPMSolverMultistepScheduler", "euler_at_final", True),
    ("EDMDPMSolverMultistepScheduler", "thresholding", True),
    ("EDMEulerScheduler", "sigma_data", "0.5"),
    ("EDMEulerScheduler", "use_karras_sigmas", True),
  ]:
    with pytest.raises(ConfigError, match=field):
      scheduler_overrides({"_class_name": cls, field: value})


def test_unsupported_scheduler_settings_are_refused_by_name():
  for cls, field, value in [
    ("DPMSolverMultistepScheduler", "timestep_spacing", "linspace"),  # other timesteps than jaxdiff's
    ("DPMSolverMultistepScheduler", "algorithm_type", "dpmsolver"),
    ("DPMSolverMultistepScheduler", "solver_type", "heun"),
    ("DPMSolverMultistepScheduler", "use_lu_lambdas", True),
    ("EulerDiscreteScheduler", "timestep_spacing", "linspace"),
    ("EulerDiscreteScheduler", "interpolation_type", "log_linear"),
    ("FlowMatchEulerDiscreteScheduler", "use_dynamic_shifting", True),
    ("FlowMatchEulerDiscreteScheduler", "stochastic_sampling", True),
  ]:
    with pytest.raises(ConfigError, match=field):
      scheduler_overrides({"_class_name": cls, "timestep_spacing": "trailing", field: value}
                          if cls != "FlowMatchEulerDiscreteScheduler" else {"_class_name": cls, field: value})  # fmt: skip


# ---------------------------------------------------------------- jaxdiff.load on an imported workdir


@pytest.fixture(scope="module")
def class_workdir(tmp_path_factory):
  root = tmp_path_factory.mktemp("classes")
  unet = _diffusers_unet(**{**LAYOUTS["class_scale_shift"], "in_channels": 1, "out_channels": 1})
  _save_pipeline(root / "pipe", unet, diffusers.DDIMScheduler(), diffusers.DDIMPipeline)
  import_diffusers(str(root / "pipe"), str(root / "wd"))
  return str(root / "wd")


def test_load_refuses_labels_outside_the_classes(class_workdir):
  import jaxdiff
  from jaxdiff.errors import SamplingError

  run = jaxdiff.load(class_workdir)
  assert run.config.model.num_classes == 5
  for labels, bad in [([12, 0], "12"), ([-3, 1], "-3"), (5, "5")]:
    with pytest.raises(SamplingError, match=f"class {bad}, outside 0..4"):
      run.sample(jax.random.key(0), 2, labels=labels, num_steps=2)
  with pytest.raises(SamplingError, match="integer"):
    run.sample(jax.random.key(0), 2, labels=[1.5, 0], num_steps=2)
  with pytest.raises(SamplingError, match="shape"):
    run.sample(jax.random.key(0), 2, labels=[1, 2, 3], num_steps=2)
  x = run.sample(jax.random.key(0), 2, labels=[4, 0], num_steps=2)
  assert np.all(np.isfinite(np.asarray(x)))


def test_load_speaks_python_arguments(class_workdir, tmp_path):
  import jaxdiff
  from jaxdiff.errors import SamplingError

  with pytest.raises(SamplingError) as e:
    jaxdiff.load(class_workdir, step=5)
  assert "step=5" in str(e.value) and "--" not in str(e.value).split("train.py")[0]
  with pytest.raises(SamplingError, match="load\\(workdir=") as e:
    jaxdiff.load(str(tmp_path / "nowhere"))
  assert "--workdir" not in str(e.value)
  with pytest.raises(SamplingError, match="params='ema'"):
    jaxdiff.load(class_workdir, params="best")


def test_import_without_data_records_none_and_fine_tuning_names_the_fix(class_workdir):
  from jaxdiff.data import create_dataset
  from jaxdiff.errors import DataError
  from jaxdiff.training.run_records import load_config

  config = load_config(class_workdir)
  assert config.data.name == "none"
  with pytest.raises(DataError, match="--config.data.name=tfds/"):
    next(iter(create_dataset(config, batch_size=2)))


def test_interop_is_an_attribute_of_jaxdiff_without_torch():
  code = (
    "import sys, jaxdiff; jaxdiff.interop.import_diffusers; assert 'torch' not in sys.modules; print('ok')"
  )
  r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-2000:]


# ---------------------------------------------------------------- AutoencoderKL folders <-> autoencoder workdirs


def _diffusers_vae(path, **kw):
  """A tiny AutoencoderKL (1 channel, 8x8, the digits' shape) with every weight moved off its init."""
  torch.manual_seed(0)
  layout = dict(block_out_channels=(16, 32), layers_per_block=1, latent_channels=4, norm_num_groups=8)
  layout.update(kw)
  levels = len(layout["block_out_channels"])
  vae = diffusers.AutoencoderKL(
    in_channels=1, out_channels=1, sample_size=8, down_block_types=("DownEncoderBlock2D",) * levels,
    up_block_types=("UpDecoderBlock2D",) * levels, **layout,
  ).eval()  # fmt: skip
  with torch.no_grad():
    for p in vae.parameters():
      p.add_(0.05 * torch.randn_like(p))
  vae.save_pretrained(str(path))
  return vae


def test_vae_folder_imports_as_an_autoencoder_workdir_that_encodes_and_decodes_as_diffusers(tmp_path, capsys):
  """import of an AutoencoderKL folder writes the autoencoder workdir train.py writes (config.json,
  checkpoint 0, autoencoder.json); jaxdiff.latents' loader reads it and encodes / decodes as diffusers."""
  from jaxdiff.models.autoencoder import decode_latents, encode_images
  from jaxdiff.training.autoencoder_step import load_autoencoder
  from jaxdiff.training.run_records import load_config

  vae = _diffusers_vae(tmp_path / "vae", scaling_factor=0.7, shift_factor=0.1)
  wd = str(tmp_path / "wd")
  assert interop_main(["import", str(tmp_path / "vae"), wd, "--data=digits"]) == 0
  assert "autoencoder workdir" in capsys.readouterr().out
  assert sorted(os.listdir(wd)) == ["autoencoder.json", "checkpoints", "config.json", "config.py"]
  config = load_config(wd)
  assert config.model.name == "autoencoder_kl" and config.data.name == "digits"
  assert (config.data.channels, config.data.image_size) == (1, 8)
  assert tuple(config.autoencoder.block_out_channels) == (16, 32) and config.autoencoder.norm_num_groups == 8
  assert json.loads((tmp_path / "wd" / "autoencoder.json").read_text()) == dict(
    step=0, scaling_factor=0.7, shift_factor=0.1
  )
  model, variables = load_autoencoder(wd)
  assert (model.scaling_factor, model.shift_factor) == (0.7, 0.1)
  x = np.random.RandomState(0).uniform(-1, 1, (3, 8, 8, 1)).astype(np.float32)
  z = np.random.RandomState(1).standard_normal((3, 4, 4, 4)).astype(np.float32)
  with torch.no_grad():
    dist = vae.encode(torch.from_numpy(x.transpose(0, 3, 1, 2))).latent_dist
    want_img = vae.decode(torch.from_numpy(z.transpose(0, 3, 1, 2))).sample.numpy().transpose(0, 2, 3, 1)
  mean, logvar = encode_images(model, variables, jnp.asarray(x))
  np.testing.assert_allclose(np.asarray(mean), dist.mean.numpy().transpose(0, 2, 3, 1), atol=5e-5)
  np.testing.assert_allclose(np.asarray(logvar), dist.logvar.numpy().transpose(0, 2, 3, 1), atol=5e-5)
  np.testing.assert_allclose(
    np.asarray(decode_latents(model, variables, jnp.asarray(z))), want_img, atol=5e-5
  )


@pytest.mark.slow
def test_imported_vae_workdir_encodes_a_data_set_through_the_latents_command(tmp_path):
  from jaxdiff import latents

  _diffusers_vae(tmp_path / "vae", scaling_factor=0.7, shift_factor=0.1)
  wd = str(tmp_path / "wd")
  assert interop_main(["import", str(tmp_path / "vae"), wd]) == 0
  out = str(tmp_path / "enc")
  rc = latents.main(
    ["jaxdiff.latents", "encode", f"--vae={wd}", "--config=configs/digits.py", f"--out={out}",
     "--config.data.split=test", "--dtype=float32"]
  )  # fmt: skip
  manifest = json.loads(open(os.path.join(out, "manifest.json")).read())
  assert rc == 0 and manifest["latent_shape"] == [4, 4, 4]
  scaling = manifest["vae"]["scaling"]
  assert (scaling["scaling_factor"], scaling["shift_factor"]) == (0.7, 0.1)


def test_autoencoder_workdir_exports_as_the_same_diffusers_autoencoder(tmp_path, capsys):
  vae = _diffusers_vae(tmp_path / "vae", scaling_factor=0.7)
  wd, out = str(tmp_path / "wd"), str(tmp_path / "out")
  assert interop_main(["import", str(tmp_path / "vae"), wd]) == 0
  assert interop_main(["export", wd, out]) == 0
  assert "AutoencoderKL" in capsys.readouterr().out
  with pytest.raises(ConfigError, match="export_vae_workdir"):  # the pipeline API names the one to use
    export_workdir(wd, str(tmp_path / "pipe"))
  with pytest.raises(ConfigError, match="import_vae"):
    import_diffusers(str(tmp_path / "vae"), str(tmp_path / "wd2"))
  again = diffusers.AutoencoderKL.from_pretrained(out)
  assert again.config.scaling_factor == 0.7 and list(again.config.block_out_channels) == [16, 32]
  for k, v in vae.state_dict().items():
    np.testing.assert_array_equal(again.state_dict()[k].numpy(), v.numpy(), err_msg=k)


@pytest.mark.slow
def test_autoencoder_workdir_exports_a_chosen_step_and_raw_weights(tmp_path, capsys):
  vae = _diffusers_vae(tmp_path / "vae")
  wd, out = str(tmp_path / "wd"), str(tmp_path / "out")
  assert interop_main(["import", str(tmp_path / "vae"), wd]) == 0
  assert interop_main(["export", wd, out, "--params=raw", "--step=0"]) == 0
  again = diffusers.AutoencoderKL.from_pretrained(out)
  for k, v in vae.state_dict().items():
    np.testing.assert_array_equal(again.state_dict()[k].numpy(), v.numpy(), err_msg=k)
  capsys.readouterr()
  assert interop_main(["export", wd, out, "--step=7", "--overwrite"]) == 2  # no such checkpoint
  err = capsys.readouterr().err.strip()
  assert "7" in err and len(err.splitlines()) == 1, err
  assert os.path.exists(os.path.join(out, "config.json"))  # the refused export left the folder as it was


@pytest.mark.parametrize(
  "kw,field",
  [
    (dict(use_quant_conv=False, use_post_quant_conv=False), "use_quant_conv"),
    (dict(latents_mean=[0.1, 0.2, 0.3, 0.4], latents_std=[1.0, 1.1, 1.2, 1.3]), "latents_mean"),
  ],
)
def test_vae_folders_a_workdir_cannot_hold_are_refused_in_one_line(kw, field, tmp_path, capsys):
  _diffusers_vae(tmp_path / "vae", **kw)
  assert interop_main(["import", str(tmp_path / "vae"), str(tmp_path / "wd")]) == 2
  err = capsys.readouterr().err.strip()
  assert field in err and "config.latent.vae" in err and len(err.splitlines()) == 1, err
  assert not (tmp_path / "wd").exists()


def test_broken_vae_folder_is_one_line_and_writes_nothing(tmp_path, capsys):
  _diffusers_vae(tmp_path / "vae")
  (tmp_path / "vae" / "diffusion_pytorch_model.safetensors").unlink()
  assert interop_main(["import", str(tmp_path / "vae"), str(tmp_path / "wd")]) == 2
  err = capsys.readouterr().err.strip()
  assert "safetensors" in err and len(err.splitlines()) == 1, err
  _diffusers_vae(tmp_path / "vae2")
  cfg = json.loads((tmp_path / "vae2" / "config.json").read_text())
  cfg["down_block_types"] = ["DownBlock2D", "DownEncoderBlock2D"]
  (tmp_path / "vae2" / "config.json").write_text(json.dumps(cfg))
  assert interop_main(["import", str(tmp_path / "vae2"), str(tmp_path / "wd")]) == 2
  err = capsys.readouterr().err.strip()
  assert "down_block_types" in err and len(err.splitlines()) == 1, err
  assert not (tmp_path / "wd").exists()


def test_a_pipeline_folder_imports_its_vae_only_when_the_vae_is_its_only_model(tmp_path):
  from jaxdiff.interop.vae_workdir import is_vae_folder

  _diffusers_vae(tmp_path / "pipe" / "vae")
  assert is_vae_folder(str(tmp_path / "pipe" / "vae")) and is_vae_folder(str(tmp_path / "pipe"))
  (tmp_path / "pipe" / "unet").mkdir()  # a latent pipeline: its UNet is what import converts
  assert not is_vae_folder(str(tmp_path / "pipe"))
  assert not is_vae_folder(str(tmp_path / "nowhere"))
