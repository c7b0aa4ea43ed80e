"""The notebook path: `jaxdiff.load(workdir)` -> a trained model ready to sample or to hand to the
functional API.

    run = jaxdiff.load("runs/toy2d")                      # newest checkpoint, EMA weights
    x = run.sample(jax.random.key(0), 16)                 # config.sample's sampler, any overridden
    model_fn = jaxdiff.bind(run.model.apply, run.variables)  # for jaxdiff.sample / jaxdiff.loss

The checkpoint is read exactly as `sample.py` reads it (`jaxdiff.bulk.restore_model`), and
`run.sample` goes through `jaxdiff.config_sampling.sample_from_config`, so a notebook draws what
`sample.py` and the training grids draw for the same settings.

NNX modules plug into the same samplers through `bind`: split the module once into its static
graph and its state (a pytree), and bind a function that merges them back:

    graphdef, state = nnx.split(module)
    def apply(state, x, t, **cond):
      return nnx.merge(graphdef, state)(x, t, **cond)
    model_fn = jaxdiff.bind(apply, state)               # new states reuse the compiled sampler
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import ml_collections

from jaxdiff import fileio
from jaxdiff.bulk.plan import workdir_latent_space
from jaxdiff.config_sampling import data_shape, model_fn, sample_from_config
from jaxdiff.errors import SamplingError
from jaxdiff.training.restore import restore_model

__all__ = ["load", "LoadedModel"]


@dataclasses.dataclass(frozen=True)
class LoadedModel:
  """A trained model from a workdir: the Flax `model`, its `variables` ({"params": ...}, ready for
  `model.apply` and `jaxdiff.bind`), the run's `config`, its `process` (a `Schedule` for discrete
  VP runs, else a `jaxdiff.processes` process), the checkpoint `step` and the `workdir`. A latent
  model (config.latent.vae) also holds its autoencoder, `latent`
  (`jaxdiff.training.latent_space.LatentSpace`), which `sample` decodes with."""

  model: Any
  variables: dict
  config: ml_collections.ConfigDict
  process: Any
  step: int
  workdir: str
  latent: Any = None

  @property
  def params(self) -> Any:
    """The parameters alone (`variables["params"]`)."""
    return self.variables["params"]

  @property
  def shape(self) -> tuple[int, ...]:
    """The shape of one sample: (H, W, C) for images, (D,) for points."""
    return data_shape(self.config)

  @property
  def model_fn(self) -> jax.tree_util.Partial:
    """`model_fn(x_t, t, **cond)` for `jaxdiff.sample` / `jaxdiff.loss` (= `bind(model.apply, variables)`)."""
    return model_fn(self.model, self.params)

  def sample(
    self, key: jax.Array, num: int, labels: Any = None, *, latents: bool = False, **overrides: Any
  ) -> Any:
    """`num` samples ([num, *shape], in the data's range) with the run's config.sample settings;
    any of them overridable by keyword: `sampler`, `num_steps`, `guidance_scale`, `eta`, `grid`,
    ... For class-conditional models `labels` (int [num]) are the classes asked for (None: the
    unconditional model); `context`, `x_cond` and the other keywords of
    `jaxdiff.config_sampling.sample_from_config` pass through. A latent model's samples are decoded
    (images in [-1, 1], numpy); `latents=True` returns the model's latents instead."""
    x = sample_from_config(
      self.config, self.model, self.process, self.params, key, int(num), labels, **overrides
    )
    if self.latent is None or latents or overrides.get("return_trajectory"):
      return x  # trajectories stay in the model's space
    return self.latent.decode(x)


def load(workdir: str, step: int | None = None, params: str = "ema") -> LoadedModel:
  """The model a training run in `workdir` saved: checkpoint `step` (default the newest readable
  one), `params` "ema" (the averaged weights, what sample.py uses) or "raw". Local paths and
  URLs (gs://...). Raises jaxdiff.errors.SamplingError naming the fix (in terms of these
  arguments) for a workdir without a config or checkpoints, or a step that does not exist."""
  if params not in ("ema", "raw"):
    raise SamplingError(f"load(params={params!r}): use params='ema' (the averaged weights) or 'raw'.")
  if step is not None and (isinstance(step, bool) or not isinstance(step, int) or step < 0):
    raise SamplingError(f"load(step={step!r}): give a checkpoint step (an int >= 0), or None for the newest.")
  if not fileio.isdir(workdir):
    raise SamplingError(
      f"load(workdir={workdir!r}): no such folder; give the folder of a training run or of an import "
      "(`python -m jaxdiff.interop import`)."
    )
  try:
    config, model, process, tree, restored = restore_model(workdir, params=params, step=step)
  except SamplingError as e:
    raise SamplingError(_as_arguments(str(e))) from None
  return LoadedModel(
    model=model,
    variables={"params": tree},
    config=config,
    process=process,
    step=int(restored),
    workdir=fileio.abspath(workdir),
    latent=workdir_latent_space(fileio.abspath(workdir), config),
  )


# sample.py's flags in restore_model's messages -> load's arguments
_FLAGS = {"--checkpoint_step=": "step=", "--workdir=": "workdir=", "--params=": "params="}


def _as_arguments(message: str) -> str:
  """A restore message with sample.py's flags spoken as `load`'s arguments (`step=5`, not
  `--checkpoint_step=5`); the train.py commands it suggests stay command lines."""
  head, sep, tail = message.partition("train.py")
  for flag, arg in _FLAGS.items():
    head = head.replace(flag, arg)
  return head + sep + tail
