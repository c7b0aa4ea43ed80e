"""What a user asks of a bulk sampling run, in one frozen object passed whole from the command line
to the run: `SampleRequest`. None means "the config's" (config.sample); `jaxdiff.bulk.settings`
resolves a request against a workdir's config into the run's `RunSettings`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from jaxdiff.config_sampling import GUIDANCE_OPTIONS
from jaxdiff.errors import SamplingError

__all__ = ["SampleRequest", "GRID_FLAGS", "RUN_OPTIONS", "OUTPUT_FORMATS"]

# sample.py's grid and sampler-option flags (None: the config's): config_sampling.GRID_OPTIONS + options
GRID_FLAGS = ("grid", "rho", "shift", "sigma_min", "sigma_max", "order", "s_churn")
# how one invocation runs; they never change a sample, so they are not part of the run's identity
RUN_OPTIONS = ("batch_size", "checkpoint_step", "trajectory", "grid_size", "progress")
# how image-shaped samples are stored: "uint8" pixels, or the model's float32 values unchanged
OUTPUT_FORMATS = ("uint8", "float")


@dataclasses.dataclass(frozen=True)
class SampleRequest:
  """A bulk sampling run as asked for: the sample.py flags, None where the config decides.

  Identity fields (they decide sample i): the sampler and its grid (sampler, num_steps, eta, spacing,
  grid, rho, shift, sigma_min, sigma_max, order, s_churn, clip_x0), guidance (guidance_scale,
  guidance_rescale, guidance_interval, guidance_schedule), conditioning (labels, context, cond_source,
  inpaint_source, inpaint_mask, repaint_resample, repaint_jump, paste_known), seed, shard_size,
  params, output_format and keep_latents (latent models: also store the latents, in the output
  folder's `latents/`). `RUN_OPTIONS` (batch_size, checkpoint_step, trajectory, grid_size,
  progress) only say how this invocation runs.
  """

  num_samples: int
  sampler: str | None = None
  num_steps: int | None = None
  eta: float | None = None
  spacing: str | None = None
  grid: str | None = None
  rho: float | None = None
  shift: float | None = None
  sigma_min: float | None = None
  sigma_max: float | None = None
  order: int | None = None
  s_churn: float | None = None
  clip_x0: float | None = None
  guidance_scale: float | None = None
  guidance_rescale: float | None = None
  guidance_interval: Any = None
  guidance_schedule: Any = None
  labels: Any = None
  context: str | None = None
  cond_source: str | None = None
  inpaint_source: str | None = None
  inpaint_mask: str | None = None
  repaint_resample: int = 1
  repaint_jump: int = 1
  paste_known: bool = True
  seed: int = 0
  shard_size: int = 1000
  params: str = "ema"
  output_format: str | None = None
  keep_latents: bool = False
  batch_size: int | None = None
  checkpoint_step: int | None = None
  trajectory: bool = False
  grid_size: int = 100
  progress: bool = True

  @classmethod
  def from_kwargs(
    cls, *, grid_options: dict | None = None, guidance_options: dict | None = None, **fields: Any
  ) -> SampleRequest:
    """The keyword form of `jaxdiff.bulk.generate` (grid_options / guidance_options as dicts) as a
    request; SamplingError for a keyword or option that does not exist."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(fields) - names)
    if unknown:
      raise SamplingError(f"unknown sampling option(s) {unknown}; choose from {sorted(names)}.")
    for what, given, allowed in (
      ("grid", grid_options, GRID_FLAGS),
      ("guidance", guidance_options, GUIDANCE_OPTIONS),
    ):
      bad = sorted(set(given or {}) - set(allowed))
      if bad:
        raise SamplingError(f"unknown {what} option(s) {bad}; choose from {allowed}.")
      fields.update({k: v for k, v in (given or {}).items() if v is not None})
    if "num_samples" not in fields:
      raise SamplingError("num_samples is required: how many samples in total.")
    return cls(**fields)

  def replace(self, **changes: Any) -> SampleRequest:
    return dataclasses.replace(self, **changes)

  @property
  def grid_options(self) -> dict[str, Any]:
    """The grid and sampler-option flags that were given (None values left out)."""
    return {k: getattr(self, k) for k in GRID_FLAGS if getattr(self, k) is not None}

  @property
  def guidance_options(self) -> dict[str, Any]:
    """guidance_rescale / _interval / _schedule as given (None values left out)."""
    return {k: getattr(self, k) for k in GUIDANCE_OPTIONS if getattr(self, k) is not None}
