"""diffusers ``UNet2DModel`` folders <-> jaxdiff ``UNet`` (same architecture, same weights, same outputs).

``load_diffusers_unet(path)`` reads ``config.json`` and the safetensors weights (numpy, no torch)
and builds the jaxdiff UNet whose ``apply(variables, x_nhwc, t, y)`` equals diffusers'
``UNet2DModel(x_nchw, t, class_labels=y).sample`` (transposed) to float32 precision;
``save_diffusers_unet(model, variables, path)`` writes the folder ``UNet2DModel.from_pretrained``
reads. A layout jaxdiff cannot express is refused with a ConfigError naming the config field.

Supported (``UNET_FIELDS`` lists every config key read): ``DownBlock2D`` / ``AttnDownBlock2D``
with the mirrored ``UpBlock2D`` / ``AttnUpBlock2D`` (attention at the same levels on both sides),
``block_out_channels`` that are multiples of the first, conv down/upsampling with either
``downsample_padding``, the positional time embedding with any ``flip_sin_to_cos`` /
``freq_shift`` / ``time_embedding_dim``, ``resnet_time_scale_shift`` "default" or "scale_shift",
``attention_head_dim`` (None: one head), ``num_class_embeds``, ``add_attention``, dropout, any
``norm_num_groups`` / ``norm_eps``: the DDPM checkpoints (``DDPM_CONFIGS``) and the diffusers
training examples' UNets.

Class labels: jaxdiff reserves the label ``num_classes`` for the null class of classifier-free
guidance. A diffusers table of ``num_class_embeds`` rows loads as ``num_classes =
num_class_embeds`` plus a zero null row (the null label adds nothing to the time embedding);
saving drops a null row that is zero and otherwise keeps it as label ``num_classes`` (then
``num_class_embeds = num_classes + 1``, and the private config key ``_jaxdiff_null_class``, which
diffusers ignores, tells ``load_diffusers_unet`` that the last row is the null class again).
"""

from __future__ import annotations

import re
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxdiff import fileio
from jaxdiff.errors import CheckpointError, ConfigError
from jaxdiff.interop.fields import check_field_types
from jaxdiff.interop.files import (
  DIFFUSERS_VERSION,
  flatten_params,
  read_model_folder,
  unflatten_params,
  write_model_folder,
)
from jaxdiff.models import UNet, create_model

__all__ = [
  "DDPM_CONFIGS",
  "UNET_FIELDS",
  "unet_model_config",
  "load_diffusers_unet",
  "save_diffusers_unet",
  "unet_to_diffusers_config",
  "unet_params_from_diffusers",
  "unet_params_to_diffusers",
]

# The UNet2DModel configs of Google's DDPM checkpoints on the Hugging Face hub (their config.json,
# as diffusers' conversion of the original TensorFlow models wrote them). LSUN church and bedroom
# share the CelebA-HQ network.
_DDPM_COMMON = {
  "_class_name": "UNet2DModel",
  "act_fn": "silu",
  "attention_head_dim": None,
  "center_input_sample": False,
  "downsample_padding": 0,
  "flip_sin_to_cos": False,
  "freq_shift": 1,
  "in_channels": 3,
  "layers_per_block": 2,
  "mid_block_scale_factor": 1,
  "norm_eps": 1e-06,
  "norm_num_groups": 32,
  "out_channels": 3,
  "time_embedding_type": "positional",
}
_DDPM_256 = {
  **_DDPM_COMMON,
  "block_out_channels": [128, 128, 256, 256, 512, 512],
  "down_block_types": ["DownBlock2D"] * 4 + ["AttnDownBlock2D", "DownBlock2D"],
  "up_block_types": ["UpBlock2D", "AttnUpBlock2D"] + ["UpBlock2D"] * 4,
  "sample_size": 256,
}
DDPM_CONFIGS: dict[str, dict[str, Any]] = {
  "google/ddpm-cifar10-32": {
    **_DDPM_COMMON,
    "block_out_channels": [128, 256, 256, 256],
    "down_block_types": ["DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"],
    "sample_size": 32,
  },
  "google/ddpm-celebahq-256": _DDPM_256,
  "google/ddpm-church-256": _DDPM_256,
}

NULL_CLASS_KEY = "_jaxdiff_null_class"  # config.json: the class table's last row is the null class
_DOWN = {"DownBlock2D": False, "AttnDownBlock2D": True}  # block type -> has attention
_UP = {"UpBlock2D": False, "AttnUpBlock2D": True}
# Every UNet2DModel config key this module reads; any other key with a value is refused.
UNET_FIELDS = (
  "sample_size",
  "in_channels",
  "out_channels",
  "center_input_sample",
  "time_embedding_type",
  "time_embedding_dim",
  "freq_shift",
  "flip_sin_to_cos",
  "down_block_types",
  "mid_block_type",
  "up_block_types",
  "block_out_channels",
  "layers_per_block",
  "mid_block_scale_factor",
  "downsample_padding",
  "downsample_type",
  "upsample_type",
  "dropout",
  "act_fn",
  "attention_head_dim",
  "norm_num_groups",
  "attn_norm_num_groups",
  "norm_eps",
  "resnet_time_scale_shift",
  "add_attention",
  "class_embed_type",
  "num_class_embeds",
  "num_train_timesteps",
)
# Defaults of UNet2DModel.__init__ (diffusers 0.30 - 0.42) for keys a config.json may leave out.
_DEFAULTS = {
  "sample_size": None,
  "in_channels": 3,
  "out_channels": 3,
  "center_input_sample": False,
  "time_embedding_type": "positional",
  "time_embedding_dim": None,
  "freq_shift": 0,
  "flip_sin_to_cos": True,
  "down_block_types": ("DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"),
  "mid_block_type": "UNetMidBlock2D",
  "up_block_types": ("AttnUpBlock2D", "AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
  "block_out_channels": (224, 448, 672, 896),
  "layers_per_block": 2,
  "mid_block_scale_factor": 1,
  "downsample_padding": 1,
  "downsample_type": "conv",
  "upsample_type": "conv",
  "dropout": 0.0,
  "act_fn": "silu",
  "attention_head_dim": 8,
  "norm_num_groups": 32,
  "attn_norm_num_groups": None,
  "norm_eps": 1e-5,
  "resnet_time_scale_shift": "default",
  "add_attention": True,
  "class_embed_type": None,
  "num_class_embeds": None,
  "num_train_timesteps": None,
}


# The type of every field read (jaxdiff.interop.fields.KINDS); null means the default.
_KINDS = {
  "sample_size": "size",
  "in_channels": "pos_int",
  "out_channels": "pos_int",
  "center_input_sample": "bool",
  "time_embedding_type": "str",
  "time_embedding_dim": "pos_int",
  "freq_shift": "num",
  "flip_sin_to_cos": "bool",
  "down_block_types": "str_list",
  "mid_block_type": "str",
  "up_block_types": "str_list",
  "block_out_channels": "pos_int_list",
  "layers_per_block": "pos_int",
  "mid_block_scale_factor": "num",
  "downsample_padding": "nonneg_int",
  "downsample_type": "str",
  "upsample_type": "str",
  "dropout": "nonneg_num",
  "act_fn": "str",
  "attention_head_dim": "pos_int",
  "norm_num_groups": "pos_int",
  "attn_norm_num_groups": "pos_int",
  "norm_eps": "pos_num",
  "resnet_time_scale_shift": "str",
  "add_attention": "bool",
  "class_embed_type": "str",
  "num_class_embeds": "pos_int",
  "num_train_timesteps": "pos_int",
}


def _refuse(field: str, value: Any, why: str) -> ConfigError:
  return ConfigError(f"diffusers config field {field}={value!r} cannot be expressed by jaxdiff's UNet: {why}")


def _levels(c: dict[str, Any]) -> tuple[list[int], tuple[int, ...]]:
  """The widths of a UNet2DModel config's levels and the levels that attend (the same on both
  sides, as jaxdiff builds them); refuses block types and widths jaxdiff cannot express."""
  channels = [int(v) for v in c["block_out_channels"]]
  down, up = list(c["down_block_types"]), list(c["up_block_types"])
  if not channels or len(down) != len(channels) or len(up) != len(channels):
    raise _refuse("down_block_types", down, "needs one down and one up block per block_out_channels entry")
  base = channels[0]
  if any(ch % base for ch in channels):
    raise _refuse("block_out_channels", channels, "every level's width must be a multiple of the first")
  for i, kind in enumerate(down):
    if kind not in _DOWN:
      raise _refuse(f"down_block_types[{i}]", kind, f"supported: {sorted(_DOWN)}")
  for i, kind in enumerate(up):
    if kind not in _UP:
      raise _refuse(f"up_block_types[{i}]", kind, f"supported: {sorted(_UP)}")
  last = len(channels) - 1
  levels = tuple(level for level, kind in enumerate(down) if _DOWN[kind])
  up_levels = tuple(sorted(last - i for i, kind in enumerate(up) if _UP[kind]))
  if levels != up_levels:
    raise _refuse(
      "up_block_types", up, f"jaxdiff attends at the same levels on both sides (down: levels {levels})"
    )
  return channels, levels


def _norms(c: dict[str, Any], channels: list[int]) -> tuple[int, str, bool]:
  """GroupNorm's group count, the time-embedding mode and whether the middle attention normalises."""
  groups = c["norm_num_groups"]
  if groups is None:
    raise _refuse("norm_num_groups", None, "give the group count")
  groups = int(groups)
  bad = sorted(w for w in _group_widths(channels, int(c["layers_per_block"])) if w % groups)
  if bad:
    raise _refuse("norm_num_groups", groups, f"does not divide the {bad[0]} channels of a GroupNorm")
  shift = c["resnet_time_scale_shift"]
  if shift not in ("default", "scale_shift"):
    raise _refuse("resnet_time_scale_shift", shift, "supported: 'default', 'scale_shift'")
  attn_groups = c["attn_norm_num_groups"]
  if attn_groups is not None and int(attn_groups) != groups:
    raise _refuse(
      "attn_norm_num_groups", attn_groups, f"the middle attention's groups must be norm_num_groups={groups}"
    )
  mid_norm = attn_groups is not None or shift == "default"
  return groups, shift, mid_norm


def unet_model_config(config: dict[str, Any], where: str = "the UNet2DModel config") -> dict[str, Any]:
  """The ``config.model`` fields of the jaxdiff UNet with the layout of a diffusers ``UNet2DModel``
  config (a parsed ``config.json``, named `where` in messages); ConfigError naming the first field
  of a wrong type or that jaxdiff cannot express."""
  if not isinstance(config.get("_class_name", ""), str):
    raise ConfigError(f"{where}: _class_name={config['_class_name']!r} must be a string.")
  name = config.get("_class_name", "UNet2DModel")
  if name != "UNet2DModel":
    raise _refuse("_class_name", name, "only UNet2DModel folders are read here (DiT: load_diffusers_dit)")
  unknown = sorted(
    k for k, v in config.items() if not k.startswith("_") and k not in UNET_FIELDS and v is not None
  )
  if unknown:
    raise _refuse(unknown[0], config[unknown[0]], "a UNet2DModel field this converter does not know")
  check_field_types(config, _KINDS, where)
  c = {**_DEFAULTS, **{k: v for k, v in config.items() if not k.startswith("_")}}

  fixed = {
    "center_input_sample": False,
    "time_embedding_type": "positional",
    "mid_block_scale_factor": 1,
    "downsample_type": "conv",
    "upsample_type": "conv",
    "class_embed_type": None,
    "mid_block_type": "UNetMidBlock2D",
  }
  for field, want in fixed.items():
    if c[field] != want:
      raise _refuse(field, c[field], f"only {want!r} is supported")
  if c["act_fn"] not in ("silu", "swish"):
    raise _refuse("act_fn", c["act_fn"], "jaxdiff's blocks use SiLU")

  channels, levels = _levels(c)
  base = channels[0]
  groups, shift, mid_norm = _norms(c, channels)

  head_dim = c["attention_head_dim"]
  attn_widths = [channels[level] for level in levels] + ([channels[-1]] if c["add_attention"] else [])
  if head_dim is not None:
    head_dim = int(head_dim)
    for w in attn_widths:
      if head_dim <= 0 or w % head_dim:
        raise _refuse("attention_head_dim", head_dim, f"must divide the {w} channels of an attention block")
  emb_dim = c["time_embedding_dim"]
  num_classes = c["num_class_embeds"]
  if num_classes is not None and config.get(NULL_CLASS_KEY):
    num_classes = int(num_classes) - 1  # the last row is jaxdiff's (trained) null class
  padding = int(c["downsample_padding"])
  if padding not in (0, 1):
    raise _refuse("downsample_padding", padding, "supported: 0 (bottom/right only) or 1")
  return {
    "name": "unet",
    "base_channels": base,
    "channel_mult": tuple(ch // base for ch in channels),
    "num_res_blocks": int(c["layers_per_block"]),
    "attention_resolutions": (),
    "linear_attention_resolutions": (),
    "attention_levels": levels,
    "mid_attention": bool(c["add_attention"]),
    "mid_attention_norm": bool(mid_norm),
    "num_heads": 1,
    "head_dim": -1 if head_dim is None else head_dim,
    "dropout": float(c["dropout"]),
    "resblock_updown": False,
    "conv_resample": True,
    "use_scale_shift_norm": shift == "scale_shift",
    "num_groups": groups,
    "norm_eps": float(c["norm_eps"]),
    "in_channels": int(c["in_channels"]),
    "out_channels": int(c["out_channels"]),
    "learn_sigma": False,
    "num_classes": 0 if num_classes is None else int(num_classes),
    "self_condition": False,
    "context_dim": 0,
    "cond_channels": 0,
    "time_input": "index",
    "time_embedding": "sinusoidal",
    "flip_sin_to_cos": bool(c["flip_sin_to_cos"]),
    "freq_shift": float(c["freq_shift"]),
    "downsample_padding": padding,
    "time_embed_dim": -1 if emb_dim is None else int(emb_dim),
    "dtype": "float32",
    "param_dtype": "float32",
  }


def _group_widths(channels: list[int], layers: int) -> set[int]:
  """Channel counts of every GroupNorm of a UNet2DModel with these block widths."""
  widths = set(channels)
  skips = [channels[0]]
  for level, ch in enumerate(channels):
    skips += [ch] * layers + ([ch] if level < len(channels) - 1 else [])
  h = channels[-1]
  for level in reversed(range(len(channels))):
    for _ in range(layers + 1):
      widths.add(h + skips.pop())
      h = channels[level]
  return widths


# ---------------------------------------------------------------- parameter names

_MODULES = [  # jaxdiff top-level module -> diffusers prefix (level-indexed ones below)
  (r"conv_in", "conv_in"),
  (r"conv_out", "conv_out"),
  (r"norm_out", "conv_norm_out"),
  (r"time_embed", "time_embedding"),
  (r"label_embed", "class_embedding"),
  (r"mid_res_(\d+)", "mid_block.resnets.{0}"),
  (r"mid_attn", "mid_block.attentions.0"),
  (r"down_(\d+)_res_(\d+)", "down_blocks.{0}.resnets.{1}"),
  (r"down_(\d+)_attn_(\d+)", "down_blocks.{0}.attentions.{1}"),
  (r"down_(\d+)_downsample", "down_blocks.{0}.downsamplers.0"),
  (r"up_(\d+)_res_(\d+)", "up_blocks.{up}.resnets.{1}"),
  (r"up_(\d+)_attn_(\d+)", "up_blocks.{up}.attentions.{1}"),
  (r"up_(\d+)_upsample", "up_blocks.{up}.upsamplers.0"),
]
_SUBMODULES = {  # jaxdiff path inside a module (without the leaf) -> diffusers name
  ("norm_1", "norm"): "norm1",
  ("norm_2", "norm"): "norm2",
  ("conv_1",): "conv1",
  ("conv_2",): "conv2",
  ("emb_proj",): "time_emb_proj",
  ("skip",): "conv_shortcut",
  ("norm", "norm"): "group_norm",
  ("attention", "query"): "to_q",
  ("attention", "key"): "to_k",
  ("attention", "value"): "to_v",
  ("attention", "out"): "to_out.0",
  ("dense_0",): "linear_1",
  ("dense_1",): "linear_2",
  ("conv",): "conv",
  ("norm",): None,  # norm_out's GroupNorm: the module itself
  (): None,
}
_LEAVES = {"kernel": "weight", "scale": "weight", "embedding": "weight", "bias": "bias"}
# names older diffusers versions (and the original DDPM conversions) wrote for attention blocks
_LEGACY = {".query.": ".to_q.", ".key.": ".to_k.", ".value.": ".to_v.", ".proj_attn.": ".to_out.0."}


def _diffusers_key(path: tuple[str, ...], num_levels: int) -> str:
  top, inner, leaf = path[0], path[1:-1], path[-1]
  for pattern, template in _MODULES:
    m = re.fullmatch(pattern, top)
    if m:
      up = num_levels - 1 - int(m.group(1)) if template.startswith("up_blocks") else None
      prefix = template.format(*m.groups(), up=up)
      break
  else:
    raise ConfigError(f"parameter {'/'.join(path)} has no diffusers UNet2DModel counterpart")
  if inner not in _SUBMODULES:
    raise ConfigError(f"parameter {'/'.join(path)} has no diffusers UNet2DModel counterpart")
  sub = _SUBMODULES[inner]
  return ".".join(p for p in (prefix, sub, _LEAVES[leaf]) if p)


def _to_jax(key: str, value: np.ndarray, want: tuple[int, ...]) -> np.ndarray:
  value = np.asarray(value, np.float32)
  if value.ndim == 4 and len(want) == 4:  # conv OIHW -> HWIO
    value = value.transpose(2, 3, 1, 0)
  elif value.ndim == 4 and len(want) == 2:  # 1x1 conv shortcut -> Dense [in, out]
    value = value[:, :, 0, 0].T
  elif value.ndim == 2 and not key.endswith("class_embedding.weight"):
    value = value.T  # Linear [out, in] -> Dense [in, out]
  return value


def _to_torch(key: str, value: np.ndarray) -> np.ndarray:
  value = np.asarray(value, np.float32)
  if value.ndim == 4:  # HWIO -> OIHW
    return value.transpose(3, 2, 0, 1)
  if key.endswith("conv_shortcut.weight"):  # Dense [in, out] -> 1x1 conv
    return value.T[:, :, None, None]
  if value.ndim == 2 and not key.endswith("class_embedding.weight"):
    return value.T
  return value


def unet_params_from_diffusers(model: UNet, tensors: dict[str, np.ndarray]) -> dict:
  """The jaxdiff parameters of `model` from a UNet2DModel state dict (numpy arrays); every
  tensor must be used and every shape must match (CheckpointError naming the first that does not)."""
  tensors = dict(tensors)
  for key in list(tensors):
    new = key
    for old, repl in _LEGACY.items():
      new = new.replace(old, repl)
    if new != key:
      tensors[new] = tensors.pop(key)
  size = 2 ** (len(model.channel_mult) - 1)
  args = [jnp.zeros((1, size, size, max(model.in_channels, 1)), jnp.float32), jnp.zeros((1,), jnp.float32)]
  if model.num_classes > 0:
    args.append(jnp.zeros((1,), jnp.int32))
  abstract = jax.eval_shape(model.init, jax.random.key(0), *args)["params"]
  out, used = {}, set()
  for path, leaf in flatten_params(abstract).items():
    key = _diffusers_key(path, len(model.channel_mult))
    if key not in tensors:
      raise CheckpointError(f"the diffusers weights have no {key} (needed for jaxdiff's {'/'.join(path)})")
    value = _to_jax(key, tensors[key], leaf.shape)
    if path[0] == "label_embed" and value.shape[0] == leaf.shape[0] - 1:  # + a zero null-class row
      value = np.concatenate([value, np.zeros((1, value.shape[1]), np.float32)], axis=0)
    if value.shape != leaf.shape:
      raise CheckpointError(
        f"{key} has shape {tensors[key].shape}, which does not fit jaxdiff's {'/'.join(path)} {leaf.shape}"
      )
    out[path] = value
    used.add(key)
  extra = sorted(set(tensors) - used)
  if extra:
    raise CheckpointError(f"the diffusers weights hold tensors the config's layout does not use: {extra[:5]}")
  return unflatten_params(out)


def load_diffusers_unet(path: str) -> tuple[UNet, dict]:
  """(model, variables) of the diffusers ``UNet2DModel`` folder `path` (``config.json`` +
  ``diffusion_pytorch_model.safetensors``): ``model.apply(variables, x_nhwc, t, y)`` is the
  diffusers forward on the NCHW transpose. ConfigError names a config field jaxdiff cannot express."""
  config, tensors = read_model_folder(path)
  model = create_model({"model": unet_model_config(config, fileio.join(path, "config.json"))})
  return model, {"params": unet_params_from_diffusers(model, tensors)}


# ---------------------------------------------------------------- jaxdiff -> diffusers


def _check_exportable(model: UNet, params: dict) -> None:
  """ConfigError naming the first ``model.*`` field (or GroupNorm width) a UNet2DModel cannot express."""
  for field, ok, why in (
    (
      "linear_attention_resolutions",
      not model.linear_attention_resolutions,
      "UNet2DModel has no linear attention",
    ),
    ("context_dim", model.context_dim == 0, "cross-attention needs UNet2DConditionModel"),
    ("cond_channels", model.cond_channels == 0, "no image-conditioning input"),
    ("self_condition", not model.self_condition, "no self-conditioning input"),
    ("resblock_updown", not model.resblock_updown, "only conv down/upsampling is converted"),
    ("conv_resample", model.conv_resample, "only conv down/upsampling is converted"),
    (
      "time_embedding",
      model.time_embedding == "sinusoidal",
      "UNet2DModel's positional embedding is sinusoidal",
    ),
    (
      "time_input",
      model.time_input in ("index", "unit", "c_noise"),
      "UNet2DModel embeds the timestep it is given: 'index' (a chain's timestep), 'unit' (1000 t, what "
      "FlowMatchEulerDiscreteScheduler feeds) or 'c_noise' (ln(sigma)/4, what diffusers' EDM schedulers feed)",
    ),
  ):
    if not ok:
      raise ConfigError(
        f"config.model.{field}={getattr(model, field)!r} cannot be saved as a UNet2DModel: {why}"
      )
  groups = int(model.num_groups)
  for path, leaf in flatten_params(params).items():
    if path[-1] == "scale" and leaf.shape[0] % groups:
      raise ConfigError(
        f"config.model.num_groups={groups} does not divide the {leaf.shape[0]} channels of {'/'.join(path)} "
        "(jaxdiff lowers the group count there; diffusers' GroupNorm needs a divisor)"
      )


def unet_to_diffusers_config(model: UNet, params: dict, sample_size: int | None = None) -> dict[str, Any]:
  """The UNet2DModel ``config.json`` of a jaxdiff UNet (its fields and parameters); ConfigError
  naming the ``model.*`` field diffusers cannot express."""
  if not isinstance(model, UNet):
    raise ConfigError(f"save_diffusers_unet takes a jaxdiff UNet, got {type(model).__name__}")
  _check_exportable(model, params)
  levels = len(model.channel_mult)
  channels = [model.base_channels * int(m) for m in model.channel_mult]
  attn = [f"up_{level}_attn_0" in params for level in range(levels)]
  mid = params.get("mid_attn")
  groups = int(model.num_groups)
  head_dim = model.head_dim if model.head_dim > 0 else None
  if head_dim is None and model.num_heads != 1:
    widths = {channels[level] for level in range(levels) if attn[level]} | ({channels[-1]} if mid else set())
    if len(widths) > 1 or any(w % model.num_heads for w in widths):
      raise ConfigError(
        f"config.model.num_heads={model.num_heads} gives different head widths at different levels; "
        "UNet2DModel has one attention_head_dim (set model.head_dim)"
      )
    head_dim = widths.pop() // model.num_heads if widths else None
  mid_norm = mid is not None and "norm" in mid
  if mid is not None and not mid_norm and not model.use_scale_shift_norm:
    raise ConfigError("config.model.mid_attention_norm=False needs use_scale_shift_norm in UNet2DModel")
  label = params.get("label_embed", {}).get("embedding")
  num_class_embeds = None
  if label is not None:
    num_class_embeds = model.num_classes + (0 if not np.any(np.asarray(label)[-1]) else 1)
  emb_width = int(np.shape(params["time_embed"]["dense_0"]["kernel"])[1])
  extra = (
    {NULL_CLASS_KEY: True} if num_class_embeds is not None and num_class_embeds > model.num_classes else {}
  )
  return {
    "_class_name": "UNet2DModel",
    "_diffusers_version": DIFFUSERS_VERSION,
    **extra,
    "sample_size": sample_size,
    "in_channels": int(np.shape(params["conv_in"]["kernel"])[2]),
    "out_channels": int(np.shape(params["conv_out"]["kernel"])[3]),
    "center_input_sample": False,
    "time_embedding_type": "positional",
    "time_embedding_dim": None if emb_width == 4 * model.base_channels else emb_width,
    "freq_shift": float(model.freq_shift) if float(model.freq_shift) % 1 else int(model.freq_shift),
    "flip_sin_to_cos": bool(model.flip_sin_to_cos),
    "down_block_types": ["AttnDownBlock2D" if a else "DownBlock2D" for a in attn],
    "mid_block_type": "UNetMidBlock2D",
    "up_block_types": ["AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attn)],
    "block_out_channels": channels,
    "layers_per_block": int(model.num_res_blocks),
    "mid_block_scale_factor": 1,
    "downsample_padding": int(model.downsample_padding),
    "downsample_type": "conv",
    "upsample_type": "conv",
    "dropout": float(model.dropout),
    "act_fn": "silu",
    "attention_head_dim": head_dim,
    "norm_num_groups": groups,
    "attn_norm_num_groups": groups if (mid_norm and model.use_scale_shift_norm) else None,
    "norm_eps": float(model.norm_eps),
    "resnet_time_scale_shift": "scale_shift" if model.use_scale_shift_norm else "default",
    "add_attention": mid is not None,
    "class_embed_type": None,
    "num_class_embeds": num_class_embeds,
    "num_train_timesteps": None,
  }


def unet_params_to_diffusers(
  model: UNet, params: dict, num_class_embeds: int | None = None
) -> dict[str, np.ndarray]:
  """The UNet2DModel state dict (numpy float32) of jaxdiff UNet parameters."""
  out = {}
  for path, leaf in flatten_params(params).items():
    key = _diffusers_key(path, len(model.channel_mult))
    value = _to_torch(key, np.asarray(jax.device_get(leaf)))
    if path[0] == "label_embed" and num_class_embeds is not None:
      value = value[:num_class_embeds]
    out[key] = value
  return out


def save_diffusers_unet(model: UNet, variables: dict, path: str, *, sample_size: int | None = None) -> str:
  """Write `model` with `variables` as a diffusers ``UNet2DModel`` folder (``config.json`` +
  ``diffusion_pytorch_model.safetensors``) that ``UNet2DModel.from_pretrained(path)`` loads with
  equal outputs. ``sample_size`` (the image size) is recorded when given. Returns `path`."""
  params = variables["params"] if "params" in variables else variables
  params = jax.device_get(params)
  config = unet_to_diffusers_config(model, params, sample_size)
  return write_model_folder(path, config, unet_params_to_diffusers(model, params, config["num_class_embeds"]))
