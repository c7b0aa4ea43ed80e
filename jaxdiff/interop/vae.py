"""diffusers ``AutoencoderKL`` folders <-> ``jaxdiff.models.AutoencoderKL`` (safetensors, no torch).

    model, variables = load_diffusers_vae("stabilityai/sd-vae-ft-mse")  # a local folder (or a pipeline's)
    save_diffusers_vae(model, variables, "out/vae")                     # AutoencoderKL.from_pretrained reads it

Covers SD 1.x/2.x, SDXL and the 16-channel SD3 / Flux autoencoders (no quant convs, a shift factor),
and the old attention tensor names (``query`` / ``key`` / ``value`` / ``proj_attn``). A config the
module cannot represent is refused with a CheckpointError naming the field.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxdiff import fileio
from jaxdiff.errors import CheckpointError
from jaxdiff.interop.files import (
  CONFIG_NAME,
  DIFFUSERS_VERSION,
  flatten_params,
  read_model_folder,
  unflatten_params,
  write_model_folder,
)
from jaxdiff.models.autoencoder import AutoencoderKL

__all__ = ["load_diffusers_vae", "save_diffusers_vae", "vae_model_config", "vae_folder", "vae_digest"]

_DEFAULTS = {
  "in_channels": 3,
  "out_channels": 3,
  "block_out_channels": [64],
  "layers_per_block": 1,
  "latent_channels": 4,
  "norm_num_groups": 32,
  "mid_block_add_attention": True,
  "use_quant_conv": True,
  "use_post_quant_conv": True,
  "scaling_factor": 0.18215,
  "shift_factor": None,
  "latents_mean": None,
  "latents_std": None,
  "sample_size": 32,
}
# config keys that carry no architecture (or only PyTorch-side behaviour) and are read past
_IGNORED = ("_class_name", "_diffusers_version", "_name_or_path", "force_upcast", "act_fn")
_OLD_ATTENTION = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}
_ATTENTION = {"query": "to_q", "key": "to_k", "value": "to_v", "out": "to_out.0"}


def vae_folder(path: str) -> str:
  """The autoencoder folder of `path`: the folder itself, or its ``vae/`` (a pipeline folder)."""
  if not fileio.exists(fileio.join(path, CONFIG_NAME)) and fileio.exists(
    fileio.join(path, "vae", CONFIG_NAME)
  ):
    return fileio.join(path, "vae")
  return path


def _refuse(field: str, value: Any, why: str) -> CheckpointError:
  return CheckpointError(
    f"diffusers AutoencoderKL config field {field}={value!r}: {why}; jaxdiff cannot load it."
  )


def vae_model_config(config: dict) -> dict:
  """``AutoencoderKL`` keyword arguments from a diffusers config; CheckpointError naming a field it
  cannot represent (another class, block type or activation, a width GroupNorm cannot split)."""
  name = config.get("_class_name", "AutoencoderKL")
  if name != "AutoencoderKL":
    raise _refuse("_class_name", name, "only AutoencoderKL folders are autoencoders jaxdiff reads")
  if config.get("act_fn", "silu") != "silu":
    raise _refuse("act_fn", config["act_fn"], "only 'silu' is implemented")
  kwargs = {k: config.get(k, v) for k, v in _DEFAULTS.items()}
  levels = len(kwargs["block_out_channels"])
  for field, block in (("down_block_types", "DownEncoderBlock2D"), ("up_block_types", "UpDecoderBlock2D")):
    types = list(config.get(field, [block] * levels))
    if types != [block] * levels:
      raise _refuse(
        field, types, f"every level must be {block!r}, one per block_out_channels entry ({levels})"
      )
  groups = kwargs["norm_num_groups"]
  if any(int(c) % groups for c in kwargs["block_out_channels"]):
    raise _refuse(
      "norm_num_groups", groups, f"it must divide every block_out_channels {kwargs['block_out_channels']}"
    )
  for field in ("latents_mean", "latents_std"):
    v = kwargs[field]
    if v is not None and len(v) != kwargs["latent_channels"]:
      raise _refuse(field, v, f"it needs one value per latent channel ({kwargs['latent_channels']})")
  unknown = sorted(set(config) - set(_DEFAULTS) - set(_IGNORED) - {"down_block_types", "up_block_types"})
  if unknown:
    raise _refuse(
      unknown[0], config[unknown[0]], "this field is not part of the AutoencoderKL layouts jaxdiff reads"
    )
  for field in ("block_out_channels", "latents_mean", "latents_std"):
    if kwargs[field] is not None:
      kwargs[field] = tuple(kwargs[field])
  return kwargs


def _component(part: str) -> list[str]:
  m = re.fullmatch(r"(down_blocks|up_blocks)_(\d+)_(resnets|downsamplers|upsamplers)_(\d+)", part)
  if m:
    return list(m.groups())
  m = re.fullmatch(r"(resnets|attentions)_(\d+)", part)
  if m:
    return list(m.groups())
  return [_ATTENTION.get(part, part)]


def _diffusers_key(path: tuple[str, ...]) -> str:
  """The diffusers tensor name of a jaxdiff parameter path."""
  *modules, leaf = path
  parts: list[str] = []
  for m in modules:
    if m != "attention":  # the attention block's projections sit directly under attentions.N
      parts += _component(m)
  if parts[-1] == "norm":
    parts.pop()  # layers.GroupNorm wraps nn.GroupNorm as "norm": module/norm/{scale,bias} -> module.{weight,bias}
  if parts[-1] == "norm" and len(parts) > 1 and parts[-2].isdigit():
    parts[-1] = "group_norm"  # the attention block's GroupNorm
  return ".".join(parts + ["bias" if leaf == "bias" else "weight"])


def _to_diffusers(value: np.ndarray) -> np.ndarray:
  if value.ndim == 4:
    return value.transpose(3, 2, 0, 1)  # HWIO -> OIHW
  return value.T if value.ndim == 2 else value


def _from_diffusers(value: np.ndarray, like: Any, key: str) -> np.ndarray:
  if len(like.shape) == 2 and value.ndim == 4 and value.shape[2:] == (1, 1):
    value = value[:, :, 0, 0]  # attention projections stored as 1x1 convolutions
  value = value.transpose(2, 3, 1, 0) if value.ndim == 4 else (value.T if value.ndim == 2 else value)
  if tuple(value.shape) != tuple(like.shape):
    raise CheckpointError(
      f"tensor {key} has shape {tuple(_to_diffusers(value).shape)}, the config's layout needs "
      f"{tuple(_to_diffusers(np.zeros(like.shape)).shape)}; the weights do not match config.json."
    )
  return value


def _template(model: AutoencoderKL) -> dict:
  x = jnp.zeros((1, model.sample_size, model.sample_size, model.in_channels), jnp.float32)
  return jax.eval_shape(lambda: model.init({"params": jax.random.key(0), "latent": jax.random.key(0)}, x))


def _rename_old(tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  out = {}
  for key, value in tensors.items():
    m = re.fullmatch(r"(.*\.attentions\.\d+)\.(query|key|value|proj_attn)\.(weight|bias)", key)
    out[f"{m[1]}.{_OLD_ATTENTION[m[2]]}.{m[3]}" if m else key] = value
  return out


def load_diffusers_vae(path: str, *, dtype: Any = jnp.float32) -> tuple[AutoencoderKL, dict]:
  """(model, variables) from a diffusers ``AutoencoderKL`` folder (or a pipeline folder with ``vae/``),
  computing in `dtype`; parameters stay float32. CheckpointError for a layout it cannot represent
  (naming the field) or for tensors that are missing, extra or of the wrong shape."""
  folder = vae_folder(path)
  config, tensors = read_model_folder(folder)
  model = AutoencoderKL(**vae_model_config(config), dtype=jnp.dtype(dtype))
  tensors = _rename_old(tensors)
  flat = flatten_params(_template(model)["params"])
  params, used = {}, set()
  for p, like in flat.items():
    key = _diffusers_key(p)
    if key not in tensors:
      raise CheckpointError(f"{folder}: tensor {key} is missing from the weights (config.json asks for it).")
    params[p] = jnp.asarray(_from_diffusers(np.asarray(tensors[key], np.float32), like, key))
    used.add(key)
  extra = sorted(set(tensors) - used)
  if extra:
    raise CheckpointError(
      f"{folder}: tensor {extra[0]} (and {len(extra) - 1} more) has no place in the layout config.json "
      "describes (e.g. use_quant_conv / use_post_quant_conv / mid_block_add_attention disagree with the weights)."
    )
  return model, {"params": unflatten_params(params)}


def save_diffusers_vae(model: AutoencoderKL, variables: dict, path: str) -> str:
  """Write `model` / `variables` as a diffusers ``AutoencoderKL`` folder (config.json + safetensors)."""
  params = variables["params"] if "params" in variables else variables
  tensors = {
    _diffusers_key(p): _to_diffusers(np.asarray(v, np.float32)) for p, v in flatten_params(params).items()
  }
  levels = len(model.block_out_channels)
  config = {k: getattr(model, k) for k in _DEFAULTS}
  for field in ("block_out_channels", "latents_mean", "latents_std"):
    if config[field] is not None:
      config[field] = [float(v) if field != "block_out_channels" else int(v) for v in config[field]]
  config.update(
    _class_name="AutoencoderKL",
    _diffusers_version=DIFFUSERS_VERSION,
    act_fn="silu",
    down_block_types=["DownEncoderBlock2D"] * levels,
    up_block_types=["UpDecoderBlock2D"] * levels,
    force_upcast=True,
  )
  return write_model_folder(path, config, tensors)


def vae_digest(variables: dict, model: AutoencoderKL | None = None) -> str:
  """A short sha256 of the autoencoder's parameters (and hyperparameters when given): the identity
  an encoded data set or a latent workdir records, so another autoencoder is refused."""
  h = hashlib.sha256()
  params = variables["params"] if "params" in variables else variables
  for p, v in sorted(flatten_params(params).items()):
    a = np.ascontiguousarray(np.asarray(v, np.float32))
    h.update("/".join(p).encode() + str(a.shape).encode() + a.tobytes())
  if model is not None:
    h.update(repr(sorted((k, str(getattr(model, k))) for k in _DEFAULTS)).encode())
  return h.hexdigest()[:16]
