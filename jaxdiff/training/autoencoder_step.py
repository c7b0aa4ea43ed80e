"""Training an autoencoder (``config.model.name = "autoencoder_kl"``): the loss, the jitted step, the loop.

The loss is an L1 or L2 reconstruction (mean over pixels) plus ``kl_weight`` times the KL divergence of
the posterior from N(0, I) (summed over the latent, averaged over the batch, as Stable Diffusion's
autoencoders were trained), plus ``perceptual_weight`` times a perceptual distance for users who
register one (``PERCEPTUAL_LOSSES``; jaxdiff ships no LPIPS weights). At the end of training the
scaling factor that gives the training latents unit variance is measured (unless
``config.autoencoder.scaling_factor`` fixes it) and written with the workdir's
``autoencoder.json``; ``load_autoencoder_workdir`` reads the model back with its EMA parameters.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from jaxdiff import data, fileio, images
from jaxdiff.config_utils import validate_config
from jaxdiff.errors import CheckpointError, ConfigError
from jaxdiff.interop.vae import load_diffusers_vae, vae_folder
from jaxdiff.models.autoencoder import AutoencoderKL, decode_latents, denormalize_latents, encode_images
from jaxdiff.training.checkpointer import Checkpointer
from jaxdiff.training.run_records import load_config, save_config
from jaxdiff.training.state import TrainState, create_optimizer, ema_decay, ema_update

__all__ = [
  "AUTOENCODER_RECORD",
  "PERCEPTUAL_LOSSES",
  "RECON_LOSSES",
  "autoencoder_from_config",
  "autoencoder_loss",
  "make_autoencoder_step",
  "train_autoencoder",
  "load_autoencoder_workdir",
  "load_autoencoder",
  "latent_decoder",
]

AUTOENCODER_RECORD = "autoencoder.json"  # the measured scaling of a trained autoencoder
METRICS = "metrics.jsonl"  # the logged losses, one JSON line per config.train.log_every steps (as train.py's)
RECON_LOSSES = ("l1", "l2")
# name -> fn(x, reconstruction) -> per-example distance [b]; config.autoencoder.perceptual names one
PERCEPTUAL_LOSSES: dict[str, Callable[[jax.Array, jax.Array], jax.Array]] = {}
_ARCH = (
  "block_out_channels",
  "layers_per_block",
  "latent_channels",
  "norm_num_groups",
  "mid_block_add_attention",
)


def autoencoder_from_config(config: ml_collections.ConfigDict, scaling: dict | None = None) -> AutoencoderKL:
  """The AutoencoderKL of config.autoencoder for config.data's images (ConfigError naming a bad field)."""
  a = config.autoencoder
  if a.recon_loss not in RECON_LOSSES:
    raise ConfigError(f"config.autoencoder.recon_loss must be one of {RECON_LOSSES}, got {a.recon_loss!r}")
  if a.perceptual_weight > 0 and a.perceptual not in PERCEPTUAL_LOSSES:
    raise ConfigError(
      f"config.autoencoder.perceptual={a.perceptual!r} is not registered in "
      "jaxdiff.training.autoencoder_step.PERCEPTUAL_LOSSES; register one or set perceptual_weight=0"
    )
  channels = tuple(int(c) for c in a.block_out_channels)
  if not channels or any(c % int(a.norm_num_groups) for c in channels):
    raise ConfigError(
      f"config.autoencoder.block_out_channels={channels} must be non-empty and divisible by "
      f"config.autoencoder.norm_num_groups={a.norm_num_groups}"
    )
  scaling = scaling or {
    "scaling_factor": float(a.scaling_factor) or 1.0,
    "shift_factor": float(a.shift_factor),
  }
  return AutoencoderKL(
    in_channels=int(config.data.channels),
    out_channels=int(config.data.channels),
    block_out_channels=channels,
    layers_per_block=int(a.layers_per_block),
    latent_channels=int(a.latent_channels),
    norm_num_groups=int(a.norm_num_groups),
    mid_block_add_attention=bool(a.mid_block_add_attention),
    sample_size=int(config.data.image_size),
    scaling_factor=float(scaling["scaling_factor"]),
    shift_factor=float(scaling["shift_factor"]),
    dtype=jnp.dtype(config.model.dtype),
  )


def autoencoder_loss(model: AutoencoderKL, params: Any, x: jax.Array, key: jax.Array, a: Any) -> tuple:
  """(loss, metrics): reconstruction + kl_weight * KL (+ perceptual_weight * the registered distance)."""
  recon, mean, logvar = model.apply({"params": params}, x, rngs={"latent": key})
  err = recon - x
  rec = jnp.abs(err) if a.recon_loss == "l1" else jnp.square(err)
  rec = rec.reshape(x.shape[0], -1).mean(axis=1)
  kl = 0.5 * (jnp.square(mean) + jnp.exp(logvar) - 1.0 - logvar).reshape(x.shape[0], -1).sum(axis=1)
  loss = rec + float(a.kl_weight) * kl
  metrics = {"recon": rec.mean(), "kl": kl.mean()}
  if float(a.perceptual_weight) > 0:
    p = PERCEPTUAL_LOSSES[a.perceptual](x, recon)
    loss = loss + float(a.perceptual_weight) * p
    metrics["perceptual"] = p.mean()
  loss = loss.mean()
  metrics["loss"] = loss
  return loss, metrics


def make_autoencoder_step(config: ml_collections.ConfigDict, model: AutoencoderKL) -> Callable:
  """step(state, x, key) -> (state, metrics): loss, gradients, the optimizer and the EMA update."""

  def step(state: TrainState, x: jax.Array, key: jax.Array):
    k = jax.random.fold_in(key, state.step)
    grad_fn = jax.value_and_grad(lambda p: autoencoder_loss(model, p, x, k, config.autoencoder), has_aux=True)
    (_, metrics), grads = grad_fn(state.params)
    new = state.apply_gradients(grads=grads)
    decay = ema_decay(state.step, config.ema.decay, config.ema.warmup)
    new = new.replace(ema_params=ema_update(state.ema_params, new.params, decay))
    metrics["grad_norm"] = optax.global_norm(grads)
    return new, metrics

  return step


def _init_state(config, model: AutoencoderKL, tx) -> TrainState:
  x = jnp.zeros((1, model.sample_size, model.sample_size, model.in_channels), jnp.float32)
  params = model.init({"params": jax.random.key(int(config.seed))}, x, False)["params"]
  return TrainState.create(
    apply_fn=model.apply, params=params, tx=tx, ema_params=jax.tree_util.tree_map(jnp.copy, params)
  )


def _measure_scaling(config, model: AutoencoderKL, params: Any) -> dict:
  """scaling_factor = 1 / std of posterior draws over the training set (config.autoencoder's if set)."""
  a = config.autoencoder
  if float(a.scaling_factor) > 0:
    return {"scaling_factor": float(a.scaling_factor), "shift_factor": float(a.shift_factor)}
  batches = data.create_dataset(
    config, batch_size=int(config.train.batch_size), process_index=0, process_count=1
  )
  draws = []
  encode = jax.jit(lambda x: encode_images(model, {"params": params}, x))
  key = jax.random.key(int(config.seed) + 1)
  for i in range(max(1, 2048 // int(config.train.batch_size))):
    mean, logvar = encode(next(batches)["x"])
    draws.append(
      np.asarray(mean + jnp.exp(0.5 * logvar) * jax.random.normal(jax.random.fold_in(key, i), mean.shape))
    )
  z = np.concatenate(draws)
  shift = float(a.shift_factor)
  return {"scaling_factor": float(1.0 / np.std(z - shift)), "shift_factor": shift}


def _grid(model: AutoencoderKL, params: Any, x: np.ndarray, path: str) -> None:
  mean, _ = model.apply({"params": params}, x, method=model.encode)
  recon = model.apply({"params": params}, mean, method=model.decode)
  images.save_image_grid(np.concatenate([x, np.clip(np.asarray(recon), -1, 1)]), path, nrow=len(x))


def train_autoencoder(
  config: ml_collections.ConfigDict, workdir: str, *, stop_at_step: int | None = None
) -> dict:
  """Trains (or resumes) the autoencoder of `config` in `workdir`; returns its autoencoder.json record."""
  validate_config(config)
  fileio.makedirs(workdir)
  model = autoencoder_from_config(config)
  save_config(config, workdir)
  tx, _ = create_optimizer(config)
  state = _init_state(config, model, tx)
  ckpt = Checkpointer(workdir, keep=2, async_save=False, config=config)
  state, restored = ckpt.restore(state)
  start = int(state.step)
  total = int(config.train.num_steps if stop_at_step is None else min(stop_at_step, config.train.num_steps))
  step_fn = jax.jit(make_autoencoder_step(config, model), donate_argnums=0)
  key = jax.random.key(int(config.seed))
  batches = data.create_dataset(config, start_step=start)
  fixed = next(data.create_dataset(config, batch_size=8, process_index=0, process_count=1))["x"]
  t0, log_every = time.perf_counter(), int(config.train.log_every)
  for step in range(start, total):
    state, metrics = step_fn(state, jnp.asarray(next(batches)["x"]), key)
    if (step + 1) % log_every == 0 or step + 1 == total:
      m = {k: float(v) for k, v in metrics.items()}
      logging.warning("autoencoder step %d: %s (%.1fs)", step + 1, m, time.perf_counter() - t0)
      fileio.append_text(fileio.join(workdir, METRICS), json.dumps({"step": step + 1, **m}) + "\n")
    if (step + 1) % int(config.train.checkpoint_every) == 0 or step + 1 == total:
      ckpt.save(state)
  ckpt.close()
  if restored is not None and start >= total:
    logging.warning("autoencoder already trained to step %d", start)
  _grid(model, state.ema_params, fixed, fileio.join(workdir, f"reconstructions_{int(state.step):06d}.png"))
  record = {"step": int(state.step), **_measure_scaling(config, model, state.ema_params)}
  fileio.atomic_write_text(fileio.join(workdir, AUTOENCODER_RECORD), json.dumps(record, indent=2) + "\n")
  return record


def load_autoencoder_workdir(workdir: str) -> tuple[AutoencoderKL, dict]:
  """(model with the measured scaling, {"params": EMA parameters}) of a trained autoencoder workdir."""
  config = load_config(workdir)
  if config.model.name != "autoencoder_kl":
    raise ConfigError(
      f"{workdir} holds a {config.model.name!r} run, not an autoencoder (config.model.name='autoencoder_kl')"
    )
  record_path = fileio.join(workdir, AUTOENCODER_RECORD)
  if not fileio.exists(record_path):
    raise CheckpointError(f"{record_path} not found: the autoencoder in {workdir} has not finished training.")
  model = autoencoder_from_config(config, json.loads(fileio.read_text(record_path)))
  tx, _ = create_optimizer(config)
  target = _init_state(config, model, tx)
  ckpt = Checkpointer(workdir, async_save=False, config=config)
  try:
    state, step = ckpt.restore(target)
  finally:
    ckpt.close()
  if step is None:
    raise CheckpointError(f"no checkpoint of the autoencoder in {workdir}")
  return model, {"params": jax.tree_util.tree_map(np.asarray, state.ema_params)}


def load_autoencoder(src: str, *, dtype: Any = jnp.float32) -> tuple[AutoencoderKL, dict]:
  """(model, variables) of a diffusers AutoencoderKL folder (or a pipeline's) or an autoencoder workdir."""
  folder = vae_folder(src)
  config = fileio.join(folder, "config.json")
  if fileio.exists(config) and "_class_name" in json.loads(fileio.read_text(config)):
    return load_diffusers_vae(folder, dtype=dtype)
  if fileio.exists(config):
    model, variables = load_autoencoder_workdir(src)
    return model.clone(dtype=jnp.dtype(dtype)), variables
  raise ConfigError(
    f"autoencoder {src!r} is neither a diffusers AutoencoderKL folder (config.json + safetensors, "
    "or a pipeline folder with vae/) nor a jaxdiff workdir (config.json + checkpoints)"
  )


def latent_decoder(config: ml_collections.ConfigDict) -> Callable[[Any], np.ndarray] | None:
  """For a latent-diffusion config (config.latent.vae set): normalised latents -> decoded images in
  [-1, 1], config.latent.decode_batch_size at a time; None in pixel space."""
  if not config.latent.vae:
    return None
  model, variables = load_autoencoder(str(config.latent.vae))
  chunk = int(config.latent.decode_batch_size)
  fn = jax.jit(lambda v, z: decode_latents(model, v, denormalize_latents(model, z), chunk))
  return lambda z: np.clip(np.asarray(fn(variables, jnp.asarray(z, jnp.float32))), -1.0, 1.0)
