"""What a bulk sampling run will do (`RunPlan`, decided and checked before anything is touched) and
the model it samples (`Restored`, checked against the output folder's run).

A latent model (config.latent.vae) is sampled in its latents and decoded by its autoencoder, which
must be the one the workdir records (`jaxdiff.training.latent_space.check_latent_record`); the run's
samples are the decoded images, and with keep_latents its latents too."""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

from jaxdiff import fileio
from jaxdiff.bulk.condition_tables import Conditions
from jaxdiff.bulk.folder import default_output, existing_manifest, shard_run
from jaxdiff.bulk.request import SampleRequest
from jaxdiff.bulk.settings import (
  MANIFEST_FORMAT,
  RunSettings,
  SamplingError,
  compare_manifest,
  decoded_settings,
  resolve_run,
)
from jaxdiff.errors import CheckpointError, ConfigError, DataError
from jaxdiff.shards import layout
from jaxdiff.training.latent_space import LatentSpace, check_latent_record, open_latent_space
from jaxdiff.training.restore import load_run_config, params_digest, restore_model

__all__ = ["RunPlan", "plan_run", "Restored", "restore_plan", "run_manifest"]


@dataclasses.dataclass(frozen=True)
class RunPlan:
  """What a `generate` call will do, decided and checked before anything is restored or written."""

  workdir: str
  output: str
  config: Any
  settings: RunSettings
  conditions: Conditions
  previous: dict | None  # the output folder's manifest (a run to resume or extend), or None
  checkpoint_step: int | None  # None: the newest readable checkpoint
  batch_size: int  # samples per compiled call over all processes
  request: SampleRequest
  latent: LatentSpace | None = None  # the autoencoder that decodes a latent model's samples

  @property
  def shards(self) -> list[tuple[int, int]]:
    return layout(self.settings.num_samples, self.settings.shard_size)

  @property
  def grid_size(self) -> int:
    return self.request.grid_size


def plan_run(
  workdir: str, output: str | None = None, request: SampleRequest | None = None, **choices: Any
) -> RunPlan:
  """The RunPlan of `generate(workdir, output, request)` (or of its keyword form); SamplingError
  before anything is touched."""
  if request is None:
    request = SampleRequest.from_kwargs(**choices)
  elif choices:
    raise TypeError("give a SampleRequest or keywords, not both")
  workdir = fileio.abspath(workdir)
  config = load_run_config(workdir)
  settings, conditions = resolve_run(config, request)
  latent = workdir_latent_space(workdir, config)
  if latent is not None:
    if request.trajectory:
      raise SamplingError(
        "--trajectory shows the reverse process in pixel space: not available for latent models."
      )
    settings = decoded_settings(settings, latent.image_shape(settings.data_shape), latent.identity, request)
  elif request.keep_latents:
    raise SamplingError(
      f"--keep_latents: the model in {workdir} is a pixel-space model (config.latent.vae is empty); leave it out."
    )
  output = fileio.abspath(output) if output else default_output(workdir)
  if request.grid_size < 1:
    raise SamplingError(f"--grid_size={request.grid_size} must be >= 1.")
  checkpoint_step = request.checkpoint_step
  previous = check_folder(output, settings, checkpoint_step)
  if previous is not None and checkpoint_step is None:
    checkpoint_step = previous.get("checkpoint_step")
  batch_size = config.sample.batch_size if request.batch_size is None else request.batch_size
  if isinstance(batch_size, bool) or int(batch_size) != batch_size or int(batch_size) < 1:
    raise SamplingError(f"--batch_size={batch_size} must be an integer >= 1.")
  return RunPlan(
    workdir, output, config, settings, conditions, previous, checkpoint_step, int(batch_size), request, latent
  )


def workdir_latent_space(workdir: str, config) -> LatentSpace | None:
  """The autoencoder of a latent model's workdir (None in pixel space), checked against the one its
  training recorded; SamplingError naming both when they differ or it cannot be loaded."""
  try:
    latent = open_latent_space(config)
    check_latent_record(workdir, latent, write=False, error=SamplingError)
  except (CheckpointError, ConfigError, DataError, FileNotFoundError) as e:
    raise SamplingError(f"config.latent.vae={config.latent.vae!r} of {workdir}: {e}") from None
  return latent


def check_folder(output: str, settings: RunSettings, checkpoint_step: int | None) -> dict | None:
  """The output folder's manifest (None: a new folder), checked against the requested run."""
  previous = existing_manifest(output)
  if previous is not None:
    requested = dict(settings.manifest(), format=MANIFEST_FORMAT)
    if checkpoint_step is not None:
      requested["checkpoint_step"] = int(checkpoint_step)
    compare_manifest(previous, requested, output)  # settings first: fail before restoring anything
  return previous


class Restored(NamedTuple):
  config: Any
  model: Any
  schedule: Any
  params: Any  # host arrays
  step: int
  manifest: dict  # the run's manifest: settings, checkpoint step, parameter digest
  latent: LatentSpace | None = None  # decodes a latent model's samples

  @property
  def shard_run(self) -> dict:
    """What each shard of the run records of it (`folder.shard_run`)."""
    return shard_run(self.manifest)


def run_manifest(plan: RunPlan, step: int, params: Any) -> dict:
  """run.json of the plan's run sampled from checkpoint `step` with `params`."""
  return dict(
    plan.settings.manifest(),
    format=MANIFEST_FORMAT,
    checkpoint_step=step,
    params_digest=params_digest(params),
    workdir=plan.workdir,
  )


def restore_plan(plan: RunPlan) -> Restored:
  """The model of the plan's checkpoint, checked against the folder's run."""
  previous, step = plan.previous, plan.checkpoint_step
  try:
    config, model, schedule, params, step = restore_model(
      plan.workdir, plan.settings.params, step, config=plan.config
    )
  except SamplingError as e:
    if previous is not None and step == previous.get("checkpoint_step"):
      raise SamplingError(
        f"{e}\nThe run in {plan.output} was started from checkpoint step {step}; it "
        "cannot be resumed without it. Use a new --output."
      ) from None
    raise
  manifest = run_manifest(plan, step, params)
  if previous is not None:
    compare_manifest(previous, manifest, plan.output)
  return Restored(config, model, schedule, params, step, manifest, plan.latent)
