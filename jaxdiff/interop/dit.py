"""diffusers ``DiTTransformer2DModel`` folders <-> jaxdiff ``DiT`` (same architecture, same weights).

``load_diffusers_dit(path)`` reads ``config.json`` and the safetensors weights (numpy, no torch);
``save_diffusers_dit(model, variables, path)`` writes the folder
``DiTTransformer2DModel.from_pretrained`` reads. The networks are the same (adaLN-Zero blocks,
fixed 2-D sin-cos positions, a 256-wide [cos, sin] time sinusoid with freq_shift 1, a class table
whose last row is the null class, GELU-tanh MLP of 4x width) with two layout differences:

- diffusers gives every block its own copy of the time / class embedders
  (``transformer_blocks.i.norm1.emb``; the final layer reads block 0's). jaxdiff has one: loading
  requires the copies to be equal, as in every converted DiT checkpoint (a diffusers DiT trained
  with diverging copies is refused, naming the tensor); saving writes the copy into every block.
- diffusers normalises the MLP input with ``LayerNorm(eps=norm_eps)``, ``norm_eps`` 1e-5 by default;
  jaxdiff's DiT (as the reference DiT) uses 1e-6 (``DIT_NORM_EPS``), which a saved model records.
  The difference is below the float32 noise of the time embedding (next point).

Outputs agree to ~1e-5 relative rather than 1e-6 (the UNet's): the 256 sinusoid frequencies
``exp(-ln(1e4) i / 127)`` are computed in float32 by XLA's and torch's ``exp``, which differ by an
ulp here and there; multiplied by timesteps up to 999 that moves ``sin(t f)`` by up to ~6e-5, and
the time MLP passes it on (a float64 forward of a tiny random DiT sits much closer to torch's
float32 output than jaxdiff's does; tests/test_interop.py holds the bounds).

An unconditional jaxdiff DiT saves as ``num_embeds_ada_norm=1`` with a zero class table (any label
adds nothing); ``learn_sigma`` is ``out_channels = 2 * in_channels``.
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
from jaxdiff.models import DiT, create_model

__all__ = [
  "DIT_FIELDS",
  "DIT_NORM_EPS",
  "dit_model_config",
  "load_diffusers_dit",
  "save_diffusers_dit",
  "dit_to_diffusers_config",
]

DIT_NORM_EPS = 1e-6  # jaxdiff's (and the reference DiT's) LayerNorm epsilon in every block
DIT_FIELDS = (
  "num_attention_heads",
  "attention_head_dim",
  "in_channels",
  "out_channels",
  "num_layers",
  "dropout",
  "norm_num_groups",
  "attention_bias",
  "sample_size",
  "patch_size",
  "activation_fn",
  "num_embeds_ada_norm",
  "upcast_attention",
  "norm_type",
  "norm_elementwise_affine",
  "norm_eps",
)
_DEFAULTS = {
  "num_attention_heads": 16,
  "attention_head_dim": 72,
  "in_channels": 4,
  "out_channels": None,
  "num_layers": 28,
  "dropout": 0.0,
  "attention_bias": True,
  "sample_size": 32,
  "patch_size": 2,
  "activation_fn": "gelu-approximate",
  "num_embeds_ada_norm": 1000,
  "norm_type": "ada_norm_zero",
  "norm_elementwise_affine": False,
  "norm_eps": 1e-5,
}


# The type of every field read (jaxdiff.interop.fields.KINDS); null means the default.
_KINDS = {
  "num_attention_heads": "pos_int",
  "attention_head_dim": "pos_int",
  "in_channels": "pos_int",
  "out_channels": "pos_int",
  "num_layers": "pos_int",
  "dropout": "nonneg_num",
  "norm_num_groups": "pos_int",
  "attention_bias": "bool",
  "sample_size": "size",
  "patch_size": "pos_int",
  "activation_fn": "str",
  "num_embeds_ada_norm": "int",
  "upcast_attention": "bool",
  "norm_type": "str",
  "norm_elementwise_affine": "bool",
  "norm_eps": "pos_num",
}


def _refuse(field: str, value: Any, why: str) -> ConfigError:
  return ConfigError(f"diffusers config field {field}={value!r} cannot be expressed by jaxdiff's DiT: {why}")


def dit_model_config(
  config: dict[str, Any], where: str = "the DiTTransformer2DModel config"
) -> dict[str, Any]:
  """The ``config.model`` fields of the jaxdiff DiT of a diffusers ``DiTTransformer2DModel``
  config (named `where` in messages); ConfigError naming the first field of a wrong type or that
  jaxdiff cannot express."""
  if not isinstance(config.get("_class_name", ""), str):
    raise ConfigError(f"{where}: _class_name={config['_class_name']!r} must be a string.")
  name = config.get("_class_name", "DiTTransformer2DModel")
  if name not in ("DiTTransformer2DModel", "Transformer2DModel"):
    raise _refuse("_class_name", name, "only DiTTransformer2DModel folders are read here")
  unknown = sorted(
    k for k, v in config.items() if not k.startswith("_") and k not in DIT_FIELDS and v is not None
  )
  if unknown:
    raise _refuse(
      unknown[0], config[unknown[0]], "a DiTTransformer2DModel field this converter does not know"
    )
  check_field_types(config, _KINDS, where)
  c = {**_DEFAULTS, **{k: v for k, v in config.items() if not k.startswith("_")}}
  for field, want in (
    ("norm_type", "ada_norm_zero"),
    ("activation_fn", "gelu-approximate"),
    ("attention_bias", True),
    ("norm_elementwise_affine", False),
    ("dropout", 0.0),
  ):
    if c[field] != want:
      raise _refuse(field, c[field], f"only {want!r} is supported")
  if c["num_embeds_ada_norm"] is None or int(c["num_embeds_ada_norm"]) < 1:
    raise _refuse("num_embeds_ada_norm", c["num_embeds_ada_norm"], "DiT is class-conditional")
  in_ch = int(c["in_channels"])
  out_ch = in_ch if c["out_channels"] is None else int(c["out_channels"])
  learn_sigma = out_ch == 2 * in_ch
  return {
    "name": "dit",
    "dit_variant": "",
    "patch_size": int(c["patch_size"]),
    "hidden_size": int(c["num_attention_heads"]) * int(c["attention_head_dim"]),
    "depth": int(c["num_layers"]),
    "num_heads": int(c["num_attention_heads"]),
    "mlp_ratio": 4.0,
    "num_classes": int(c["num_embeds_ada_norm"]),
    "learn_sigma": learn_sigma,
    "in_channels": in_ch,
    "out_channels": -1 if out_ch in (in_ch, 2 * in_ch) else out_ch,
    "self_condition": False,
    "cond_channels": 0,
    "context_dim": 0,
    "time_input": "index",
    "time_embedding": "sinusoidal",
    "dtype": "float32",
    "param_dtype": "float32",
  }


# ---------------------------------------------------------------- parameter names

_EMB = "transformer_blocks.{i}.norm1.emb."
_NAMES = [  # jaxdiff path (regex over "a/b/leaf") -> diffusers key
  (r"patch_embed/(kernel|bias)", "pos_embed.proj.{w}"),
  (r"time_embed_0/(kernel|bias)", _EMB + "timestep_embedder.linear_1.{w}"),
  (r"time_embed_1/(kernel|bias)", _EMB + "timestep_embedder.linear_2.{w}"),
  (r"label_embed/embedding", _EMB + "class_embedder.embedding_table.weight"),
  (r"blocks_(\d+)/adaLN_modulation/(kernel|bias)", "transformer_blocks.{0}.norm1.linear.{w}"),
  (r"blocks_(\d+)/attn/query/(kernel|bias)", "transformer_blocks.{0}.attn1.to_q.{w}"),
  (r"blocks_(\d+)/attn/key/(kernel|bias)", "transformer_blocks.{0}.attn1.to_k.{w}"),
  (r"blocks_(\d+)/attn/value/(kernel|bias)", "transformer_blocks.{0}.attn1.to_v.{w}"),
  (r"blocks_(\d+)/attn/out/(kernel|bias)", "transformer_blocks.{0}.attn1.to_out.0.{w}"),
  (r"blocks_(\d+)/mlp/fc1/(kernel|bias)", "transformer_blocks.{0}.ff.net.0.proj.{w}"),
  (r"blocks_(\d+)/mlp/fc2/(kernel|bias)", "transformer_blocks.{0}.ff.net.2.{w}"),
  (r"final_layer/adaLN_modulation/(kernel|bias)", "proj_out_1.{w}"),
  (r"final_layer/linear/(kernel|bias)", "proj_out_2.{w}"),
]


def _key(path: tuple[str, ...], block: int = 0) -> str:
  joined = "/".join(path)
  for pattern, template in _NAMES:
    m = re.fullmatch(pattern, joined)
    if m:
      groups = m.groups()
      leaf = "weight" if path[-1] in ("kernel", "embedding") else "bias"
      index = groups[:-1] if path[-1] in ("kernel", "bias") else groups
      return template.format(*index, w=leaf, i=block)
  raise ConfigError(f"parameter {joined} has no diffusers DiTTransformer2DModel counterpart")


def _to_jax(value: np.ndarray, key: str) -> np.ndarray:
  value = np.asarray(value, np.float32)
  if value.ndim == 4:  # conv OIHW -> HWIO
    return value.transpose(2, 3, 1, 0)
  if value.ndim == 2 and not key.endswith("embedding_table.weight"):
    return value.T
  return value


def _to_torch(value: np.ndarray, key: str) -> np.ndarray:
  value = np.asarray(value, np.float32)
  if value.ndim == 4:
    return value.transpose(3, 2, 0, 1)
  if value.ndim == 2 and not key.endswith("embedding_table.weight"):
    return value.T
  return value


def _abstract(model: DiT) -> dict:
  size = model.patch_size
  args = [jnp.zeros((1, size, size, model.in_channels), jnp.float32), jnp.zeros((1,), jnp.float32)]
  if model.num_classes > 0:
    args.append(jnp.zeros((1,), jnp.int32))
  return jax.eval_shape(model.init, jax.random.key(0), *args)["params"]


def dit_params_from_diffusers(model: DiT, tensors: dict[str, np.ndarray]) -> dict:
  """The jaxdiff DiT parameters from a DiTTransformer2DModel state dict (numpy arrays)."""
  out, used = {}, set()
  for path, leaf in flatten_params(_abstract(model)).items():
    key = _key(path)
    if key not in tensors:
      raise CheckpointError(f"the diffusers weights have no {key} (needed for jaxdiff's {'/'.join(path)})")
    value = tensors[key]
    if "norm1.emb." in key:  # every block's copy must be block 0's
      for i in range(1, model.depth):
        other = _key(path, i)
        if other not in tensors:
          raise CheckpointError(f"the diffusers weights have no {other}")
        if not np.array_equal(tensors[other], value):
          raise CheckpointError(
            f"{other} differs from {key}: jaxdiff's DiT has one time / class embedder, this checkpoint one per block"
          )
        used.add(other)
    value = _to_jax(value, key)
    if value.shape != leaf.shape:
      raise CheckpointError(
        f"{key} has shape {tensors[key].shape}, which does not fit jaxdiff's {'/'.join(path)} {leaf.shape}"
      )
    out[path] = value
    used.add(key)
  extra = sorted(k for k in set(tensors) - used if k != "pos_embed.pos_embed")  # the fixed table, if saved
  if extra:
    raise CheckpointError(f"the diffusers weights hold tensors jaxdiff's DiT does not use: {extra[:5]}")
  return unflatten_params(out)


def load_diffusers_dit(path: str) -> tuple[DiT, dict]:
  """(model, variables) of the diffusers ``DiTTransformer2DModel`` folder `path`:
  ``model.apply(variables, x_nhwc, t, y)`` is the diffusers forward on the NCHW transpose
  (to ~1e-5 relative: see the module's note on the time embedding)."""
  config, tensors = read_model_folder(path)
  model = create_model({"model": dit_model_config(config, fileio.join(path, "config.json"))})
  return model, {"params": dit_params_from_diffusers(model, tensors)}


def dit_to_diffusers_config(model: DiT, sample_size: int | None = None) -> dict[str, Any]:
  """The DiTTransformer2DModel ``config.json`` of a jaxdiff DiT; ConfigError naming the
  ``model.*`` field diffusers cannot express."""
  if not isinstance(model, DiT):
    raise ConfigError(f"save_diffusers_dit takes a jaxdiff DiT, got {type(model).__name__}")
  for field, ok, why in (
    ("context_dim", model.context_dim == 0, "DiTTransformer2DModel has no cross-attention"),
    ("cond_channels", model.cond_channels == 0, "no image-conditioning input"),
    ("self_condition", not model.self_condition, "no self-conditioning input"),
    ("mlp_ratio", float(model.mlp_ratio) == 4.0, "diffusers' DiT MLP is 4x wide"),
    ("time_embedding", model.time_embedding == "sinusoidal", "diffusers' DiT embeds a sinusoid"),
    ("time_input", model.time_input == "index", "DiTTransformer2DModel embeds the timestep itself ('index')"),
    ("in_channels", model.in_channels > 0, "give the input channels (model.in_channels)"),
  ):
    if not ok:
      raise ConfigError(
        f"config.model.{field}={getattr(model, field)!r} cannot be saved as a DiTTransformer2DModel: {why}"
      )
  out = model.out_channels if model.out_channels > 0 else model.in_channels
  return {
    "_class_name": "DiTTransformer2DModel",
    "_diffusers_version": DIFFUSERS_VERSION,
    "num_attention_heads": int(model.num_heads),
    "attention_head_dim": int(model.hidden_size // model.num_heads),
    "in_channels": int(model.in_channels),
    "out_channels": int(out * (2 if model.learn_sigma else 1)),
    "num_layers": int(model.depth),
    "dropout": 0.0,
    "norm_num_groups": 32,
    "attention_bias": True,
    "sample_size": int(sample_size) if sample_size else 32,
    "patch_size": int(model.patch_size),
    "activation_fn": "gelu-approximate",
    "num_embeds_ada_norm": int(model.num_classes) if model.num_classes > 0 else 1,
    "upcast_attention": False,
    "norm_type": "ada_norm_zero",
    "norm_elementwise_affine": False,
    "norm_eps": DIT_NORM_EPS,
  }


def save_diffusers_dit(model: DiT, variables: dict, path: str, *, sample_size: int | None = None) -> str:
  """Write `model` with `variables` as a diffusers ``DiTTransformer2DModel`` folder that
  ``from_pretrained(path)`` loads with equal outputs; ``sample_size`` is the latent / image size
  the position table is built for (diffusers rebuilds it for other sizes). Returns `path`."""
  params = variables["params"] if "params" in variables else variables
  params = jax.device_get(params)
  config = dit_to_diffusers_config(model, sample_size)
  tensors = {}
  for path_, leaf in flatten_params(params).items():
    for block in range(model.depth) if path_[0] in ("time_embed_0", "time_embed_1", "label_embed") else [0]:
      key = _key(path_, block)
      tensors[key] = _to_torch(np.asarray(leaf), key)
  if model.num_classes == 0:  # unconditional: a zero table of one class + the null row
    for block in range(model.depth):
      tensors[_EMB.format(i=block) + "class_embedder.embedding_table.weight"] = np.zeros(
        (2, model.hidden_size), np.float32
      )
  return write_model_folder(path, config, tensors)
