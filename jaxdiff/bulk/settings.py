"""What a bulk sampling run is: sampler settings resolved against the config, labels, the manifest.

`resolve_run` turns the user's choices (None = the config's `sample` section) into one frozen
`RunSettings`, checking every value with a message that says what to do. Its `manifest()`, plus
the checkpoint step and a digest of the parameters, is the run's manifest (`run.json` in the
output folder): a second command into the same folder must describe the same run.
`resolve_settings` gives the same manifest entries as a dict.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import ml_collections
import numpy as np

from jaxdiff import samplers
from jaxdiff.bulk.condition_tables import resolve_conditions
from jaxdiff.bulk.request import OUTPUT_FORMATS, SampleRequest
from jaxdiff.bulk.sampler_options import (
  chain_spacing,
  check_interval,
  check_sampler_options,
  grid_options,
  plan_times,
)
from jaxdiff.config_sampling import (
  data_shape,
  is_image_config,
  parse_guidance_interval,
  parse_guidance_schedule,
)
from jaxdiff.config_utils import process_from_config
from jaxdiff.errors import SamplingError
from jaxdiff.processes import as_process

__all__ = [
  "SamplingError",
  "RunSettings",
  "parse_labels",
  "labels_for",
  "labels_summary",
  "resolve_settings",
  "resolve_run",
  "compare_manifest",
  "check_balanced",
  "decoded_settings",
  "default_output_format",
  "MANIFEST_FORMAT",
  "IDENTITY_KEYS",
]

MANIFEST_FORMAT = "jaxdiff-samples/1"

# Fields that define the samples: two runs that agree on all of them produce identical sample i.
IDENTITY_KEYS = (
  "kind",
  "data_shape",
  "num_classes",
  "prediction",
  "params",
  "sampler",
  "num_steps",
  "eta",
  "spacing",
  "clip_x0",
  "guidance_scale",
  "labels",
  "seed",
  "shard_size",
  "inpaint",
  "context",
  "cond_source",
  "grid",
  "guidance",
  "output_format",
  "latent",
)

# The format images were stored in before it was a setting (manifests without the field).
LEGACY_OUTPUT_FORMAT = {"images": "uint8", "points": "float"}


@dataclasses.dataclass(frozen=True)
class RunSettings:
  """A bulk sampling run's settings, resolved and checked: the fields of its manifest.

  labels: "uniform", "none" or a tuple of classes (`parse_labels`); inpaint, context and
  cond_source: the conditioning entries of `jaxdiff.bulk.condition_tables.resolve_conditions` (None
  when unused).
  """

  kind: str
  data_shape: tuple[int, ...]
  num_classes: int
  prediction: str
  params: str
  sampler: str
  num_steps: int
  nfe: int
  eta: float
  spacing: str
  clip_x0: float
  guidance_scale: float
  labels: str | tuple[int, ...]
  seed: int
  num_samples: int
  shard_size: int
  inpaint: dict | None = None
  context: Any = None
  cond_source: dict | None = None
  grid: dict | None = None  # the GRID_FLAGS given (None: all from config.sample)
  guidance: dict | None = None  # guidance_rescale / _interval / _schedule in use (None: plain guidance)
  output_format: str | None = None  # "uint8" | "float" (None: the kind's legacy format, LEGACY_OUTPUT_FORMAT)
  # latent models: {"vae", "digest", "latent_shape", "keep_latents"}; data_shape is then the decoded one
  latent: dict | None = None

  @classmethod
  def from_manifest(cls, manifest: dict) -> RunSettings:
    """The settings recorded in a manifest dict (extra keys such as checkpoint_step are ignored)."""
    values = {f.name: manifest.get(f.name) for f in dataclasses.fields(cls)}
    labels = values["labels"]
    values.update(
      data_shape=tuple(values["data_shape"]), labels=labels if isinstance(labels, str) else tuple(labels)
    )
    return cls(**values)

  def manifest(self) -> dict:
    """The settings as run.json stores them (JSON types: lists, not tuples)."""
    out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
    out.update(data_shape=list(self.data_shape), labels=self.labels_json)
    if self.output_format is None:  # the kind's legacy format: run.json as before the setting existed
      del out["output_format"]
    if self.latent is None:  # pixel models: run.json as before latent models were decoded
      del out["latent"]
    return out

  @property
  def keep_latents(self) -> bool:
    """Whether the latents are stored too (`LATENTS_DIR` of the output folder)."""
    return bool(self.latent and self.latent.get("keep_latents"))

  @property
  def latent_shape(self) -> tuple[int, ...] | None:
    return tuple(self.latent["latent_shape"]) if self.latent else None

  @property
  def sample_format(self) -> str:
    """How samples are stored: "uint8" (images as pixels) or "float" (float32 values)."""
    return self.output_format or LEGACY_OUTPUT_FORMAT[self.kind]

  @property
  def sample_dtype(self) -> np.dtype:
    return np.dtype(np.uint8 if self.sample_format == "uint8" else np.float32)

  @property
  def labels_json(self) -> str | list[int]:
    return self.labels if isinstance(self.labels, str) else list(self.labels)

  @property
  def conditional(self) -> bool:
    """Whether samples get class labels (labels "none" samples the null class / an unconditional model)."""
    return self.labels != "none"

  @property
  def guided(self) -> bool:
    return self.guidance_scale != 1.0 or "guidance_schedule" in (self.guidance or {})

  @property
  def method(self) -> str:
    """ "ddim-50": the sampler and its step count."""
    return f"{self.sampler}-{self.num_steps}"

  def labels_of(self, index: np.ndarray) -> np.ndarray:
    """int32 labels of the samples `index` (-1 for none)."""
    return labels_for(self.labels, index, self.num_classes)

  def sampler_options(self) -> dict[str, Any]:
    """Keyword arguments of `config_sampling.sample_from_config` (with RePaint's when inpainting)."""
    opts = dict(
      sampler=self.sampler,
      num_steps=self.num_steps,
      eta=self.eta,
      spacing=self.spacing,
      clip_x0=self.clip_x0,
      guidance_scale=self.guidance_scale,
    )
    if self.inpaint:
      opts.update({k: self.inpaint[k] for k in ("repaint_resample", "repaint_jump", "paste_known")})
    opts.update(self.grid or {})
    g = self.guidance or {}
    # explicit values (the config's are resolved into the manifest): 0 / "" switch a feature off;
    # hashable (the compiled-sampler cache keys on these options)
    opts.update(
      guidance_rescale=float(g.get("guidance_rescale", 0.0)),
      guidance_interval=tuple(g["guidance_interval"]) if "guidance_interval" in g else "",
      guidance_schedule=tuple(g["guidance_schedule"]) if "guidance_schedule" in g else "",
    )
    return opts


def parse_labels(spec: Any, num_classes: int) -> str | tuple[int, ...]:
  """Canonical labels: "uniform" (sample i gets class i % num_classes), "none" or a tuple of classes.

  spec: None (uniform for class-conditional models, none for unconditional ones), "uniform",
  "none", an int, "3", "0,1,2" or a sequence of ints (cycled over the samples).
  """
  if spec is None:
    return "uniform" if num_classes > 0 else "none"
  if isinstance(spec, str):
    text = spec.strip().lower()
    if text in ("uniform", "balanced"):  # the same labels; "balanced" also asks for equal counts
      parsed: str | tuple[int, ...] = "uniform"
    elif text in ("none", "null", ""):
      parsed = "none"
    else:
      try:
        parsed = tuple(int(p) for p in text.replace(" ", "").split(",") if p != "")
      except ValueError:
        raise SamplingError(
          f"--labels={spec!r}: give a class (3), a comma-separated list (0,1,2), 'uniform' "
          "(balanced over all classes) or 'none' (the unconditional / null-class model)."
        ) from None
  elif isinstance(spec, (int, np.integer)) and not isinstance(spec, bool):
    parsed = (int(spec),)
  else:
    try:
      parsed = tuple(int(v) for v in spec)
    except (TypeError, ValueError):
      raise SamplingError(
        f"labels={spec!r}: expected a class, a list of classes, 'uniform' or 'none'."
      ) from None
  if parsed == ():
    raise SamplingError(f"--labels={spec!r} holds no class.")
  if num_classes == 0 and parsed != "none":
    raise SamplingError(
      f"--labels={spec!r}, but the model is unconditional (config.model.num_classes=0): leave --labels out."
    )
  if isinstance(parsed, tuple):
    bad = [c for c in parsed if not 0 <= c < num_classes]
    if bad:
      raise SamplingError(
        f"--labels has class(es) {bad} outside 0..{num_classes - 1} (the model has {num_classes} classes)."
      )
  return parsed


def check_balanced(spec: Any, num_samples: int, num_classes: int) -> None:
  """--labels=balanced: the same number of samples per class, which sample i -> class i mod C gives
  exactly when num_samples is a multiple of C; any other count is refused, naming the nearest ones."""
  if not (isinstance(spec, str) and spec.strip().lower() == "balanced") or num_classes < 1:
    return
  if num_samples % num_classes:
    lo, hi = num_samples // num_classes * num_classes, -(-num_samples // num_classes) * num_classes
    raise SamplingError(
      f"--labels=balanced draws the same number of samples per class, but --num_samples={num_samples} is "
      f"not a multiple of the model's {num_classes} classes: use --num_samples={hi}"
      + (f" or {lo}" if lo else "")
      + f", or --labels=uniform (class i mod {num_classes}: the first {num_samples % num_classes} classes "
      "get one sample more)."
    )


def labels_for(spec: str | tuple[int, ...], index: np.ndarray, num_classes: int) -> np.ndarray:
  """int32 labels of the samples `index` (-1 for none): a function of the sample number alone."""
  index = np.asarray(index, np.int64)
  if spec == "none":
    return np.full(index.shape, -1, np.int32)
  if spec == "uniform":
    return (index % num_classes).astype(np.int32)
  table = np.asarray(spec, np.int32)
  return table[index % len(table)]


def _positive_int(name: str, value: Any, lo: int = 1, hi: int | None = None) -> int:
  try:
    ok = not isinstance(value, bool) and float(value).is_integer()
  except (TypeError, ValueError):
    ok = False
  if not ok:
    raise SamplingError(f"--{name}={value!r} must be an integer.")
  value = int(value)
  if value < lo or (hi is not None and value > hi):
    rng = f"between {lo} and {hi}" if hi is not None else f">= {lo}"
    raise SamplingError(f"--{name}={value} must be {rng}.")
  return value


def resolve_settings(
  config: ml_collections.ConfigDict, request: SampleRequest | None = None, **choices: Any
) -> dict:
  """The run's settings as a manifest dict (`RunSettings.manifest`): `resolve_run`'s first half,
  with the same arguments, every None filled from config.sample, every value checked."""
  return resolve_run(config, request, **choices)[0].manifest()


def resolve_run(config: ml_collections.ConfigDict, request: SampleRequest | None = None, **choices: Any):
  """(RunSettings, Conditions): the run's settings and the per-sample conditioning tables
  (`jaxdiff.bulk.condition_tables.Conditions`) they describe; SamplingError naming the fix.

  `request`: a `SampleRequest`, or its fields as keywords (`SampleRequest.from_kwargs`). Every None
  is filled from config.sample; eta defaults to config.sample.eta when the sampler is the config's,
  else to the sampler's own default (1 for euler_ancestral, 0 otherwise). The guidance scale
  applies to conditional sampling only, by class labels or by a context (1 = plain conditional).
  An option the run would not use (one the sampler or the grid does not take, a spacing on a
  continuous process) is refused rather than dropped.
  """
  if request is None:
    request = SampleRequest.from_kwargs(**choices)
  elif choices:
    raise TypeError("give a SampleRequest or keywords, not both")
  r, s = request, config.sample
  process = str(config.diffusion.process)
  sampler = s.sampler if r.sampler is None else str(r.sampler)
  if sampler not in samplers.SAMPLERS:
    raise SamplingError(f"Unknown sampler {sampler!r}; choose one of {', '.join(samplers.SAMPLERS)}.")
  # a discrete chain has num_timesteps levels to visit; a continuous process takes any step count
  max_steps = int(config.diffusion.num_timesteps) if process == "vp" else None
  num_steps = _positive_int("num_steps", s.num_steps if r.num_steps is None else r.num_steps, 1, max_steps)
  spacing = chain_spacing(config, r.spacing)
  check_sampler_options(sampler, eta=r.eta, order=r.order, s_churn=r.s_churn)
  eta = r.eta
  if eta is None:
    eta = float(s.eta) if sampler == s.sampler else (1.0 if sampler == "euler_ancestral" else 0.0)
  eta = float(eta)
  if not (eta >= 0 and math.isfinite(eta)):
    raise SamplingError(f"--eta={eta} must be a finite number >= 0.")
  clip = float(s.clip_x0 if r.clip_x0 is None else r.clip_x0)
  if not (clip >= 0 and math.isfinite(clip)):
    raise SamplingError(f"--clip_x0={clip} must be >= 0 (0 disables clipping).")
  grid = grid_options(config, r.grid_options)
  proc = as_process(process_from_config(config))
  ts = plan_times(config, proc, sampler, num_steps, spacing, grid, eta)
  num_classes = int(config.model.num_classes)
  label_spec = parse_labels(r.labels, num_classes)
  num_samples = _positive_int("num_samples", r.num_samples, 1, 2**31 - 1)
  check_balanced(r.labels, num_samples, num_classes)
  entries, tables = resolve_conditions(config, r, sampler=sampler)
  with_context = entries["context"] not in (None, "none")
  guidance, guide = _guidance(config, r, label_spec, with_context, num_steps)
  if guide and "guidance_interval" in guide:
    check_interval(guide["guidance_interval"], proc, process, ts)
  if r.params not in ("ema", "raw"):
    raise SamplingError(
      f"--params={r.params!r}: use 'ema' (the averaged weights) or 'raw' (the trained ones)."
    )
  kind = "images" if is_image_config(config) else "points"
  shape = _sample_shape(config)
  guided = (label_spec != "none" or with_context) and (guidance != 1.0 or guide is not None)
  nfe = _nfe(sampler, num_steps, guided, entries["inpaint"])
  settings = RunSettings(
    kind=kind,
    data_shape=shape,
    num_classes=num_classes,
    prediction=str(config.diffusion.prediction),
    params=r.params,
    sampler=sampler,
    num_steps=num_steps,
    nfe=nfe,
    eta=eta,
    spacing=spacing,
    clip_x0=clip,
    guidance_scale=guidance,
    labels=label_spec,
    seed=_positive_int("seed", r.seed, 0, 2**32 - 1),
    num_samples=num_samples,
    shard_size=_positive_int("shard_size", r.shard_size, 1),
    grid=grid,
    guidance=guide,
    output_format=_output_format(config, kind, shape, r.output_format),  # None: the legacy format
    **entries,
  )
  return settings, tables


def decoded_settings(
  settings: RunSettings, image_shape, identity: dict, request: SampleRequest
) -> RunSettings:
  """The settings of a latent model's run: samples decoded to `image_shape` (H, W, C) by the
  autoencoder of `identity`, stored as uint8 pixels unless --output_format=float; its latents too
  with `request.keep_latents`."""
  shape = tuple(int(d) for d in image_shape)
  fmt = request.output_format or ("uint8" if shape[-1] in (1, 3) else "float")
  if fmt not in OUTPUT_FORMATS:
    raise SamplingError(f"--output_format={fmt!r}: choose one of {', '.join(OUTPUT_FORMATS)}.")
  latent = {
    "vae": identity["source"],
    "digest": identity["digest"],
    "latent_shape": list(settings.data_shape),
    "keep_latents": bool(request.keep_latents),
  }
  return dataclasses.replace(
    settings, data_shape=shape, output_format=None if fmt == "uint8" else fmt, latent=latent
  )


def _sample_shape(config) -> tuple[int, ...]:
  shape = tuple(int(d) for d in data_shape(config))
  if not all(d >= 1 for d in shape):
    raise SamplingError(
      f"the model's sample shape {list(shape)} has a dimension < 1: config.data.image_size / channels "
      "(or config.model.data_dim) in the workdir's config.json must be positive."
    )
  return shape


def _nfe(sampler: str, num_steps: int, guided: bool, inpaint: dict | None) -> int:
  """Network evaluations per sample (RePaint's resampling repeats steps)."""
  if inpaint:
    return len(samplers.repaint_schedule(num_steps, inpaint["repaint_resample"], inpaint["repaint_jump"])[0])
  return samplers.nfe(sampler, num_steps, guided)


def _guidance(config, r: SampleRequest, label_spec, with_context: bool, num_steps: int):
  """(guidance scale, guidance options in use or None): flags over config.sample, checked."""
  s, num_classes = config.sample, int(config.model.num_classes)
  given = r.guidance_options
  if (num_classes == 0 or label_spec == "none") and not with_context:
    why = "the model is unconditional" if num_classes == 0 else "--labels=none samples the null class"
    if r.guidance_scale is not None and float(r.guidance_scale) != 1.0:
      raise SamplingError(
        f"--guidance_scale={r.guidance_scale}: classifier-free guidance needs class labels or a "
        f"context, but {why}."
      )
    if given:
      raise SamplingError(
        f"--{sorted(given)[0]}: it modifies classifier-free guidance, which needs class labels or a "
        f"context, but {why}."
      )
    return 1.0, None
  guidance = float(s.guidance_scale if r.guidance_scale is None else r.guidance_scale)
  if not math.isfinite(guidance):
    raise SamplingError(f"--guidance_scale={guidance} must be finite.")
  return guidance, _guidance_options(s, given, num_steps, guidance, r.guidance_scale is not None)


def default_output_format(config: ml_collections.ConfigDict) -> str:
  """How image-shaped samples are stored by default: "uint8" pixels for image data (1 or 3 channels
  in [-1, 1]), "float" for anything else (latents, other channel counts, 2-D points)."""
  if not is_image_config(config) or str(config.data.name) == "latents":
    return "float"
  return "uint8" if int(config.data.channels) in (1, 3) else "float"


def _output_format(config, kind: str, shape: tuple[int, ...], given: str | None) -> str | None:
  fmt = default_output_format(config) if given is None else str(given)
  if fmt not in OUTPUT_FORMATS:
    raise SamplingError(f"--output_format={fmt!r}: choose one of {', '.join(OUTPUT_FORMATS)}.")
  if kind == "points" and fmt != "float":
    raise SamplingError(
      f"--output_format={fmt}: this model's samples are {shape[0]}-D points, stored as float32; leave "
      "--output_format out."
    )
  return None if fmt == LEGACY_OUTPUT_FORMAT[kind] else fmt


def _guidance_options(s, given: dict, num_steps: int, scale: float, scale_given: bool) -> dict | None:
  """The guidance options in use (flags over config.sample), checked; None when plain guidance."""

  def pick(k, default):
    return given[k] if k in given else s.get(k, default)

  try:
    rescale = float(pick("guidance_rescale", 0.0))
    interval = parse_guidance_interval(pick("guidance_interval", ""))
    schedule = parse_guidance_schedule(pick("guidance_schedule", ""), num_steps)
  except (TypeError, ValueError) as e:
    raise SamplingError(f"--{e}") from None
  if not (0.0 <= rescale <= 1.0):
    raise SamplingError(f"--guidance_rescale={rescale} must be in [0, 1] (0 = off).")
  if schedule is not None and scale_given:
    raise SamplingError(
      "--guidance_schedule gives a scale per step: leave out --guidance_scale (or the schedule)."
    )
  if schedule is None and scale == 1.0:
    explicit = [k for k in ("guidance_rescale", "guidance_interval") if k in given]
    if explicit:
      raise SamplingError(
        f"--{explicit[0]} modifies classifier-free guidance, but the guidance scale is 1 (plain "
        "conditional): pass --guidance_scale (e.g. 3) or --guidance_schedule."
      )
    return None  # at scale 1 rescale and interval change nothing
  out: dict[str, Any] = {}
  if rescale > 0:
    out["guidance_rescale"] = rescale
  if interval is not None:
    out["guidance_interval"] = list(interval)
  if schedule is not None:
    out["guidance_schedule"] = [float(v) for v in schedule]
  return out or None


def _show(v: Any) -> str:
  return repr(v) if isinstance(v, str) else str(v)


def compare_manifest(old: dict, new: dict, output: str) -> None:
  """Raise SamplingError listing what differs between the folder's run and the requested one."""
  if old.get("format") != MANIFEST_FORMAT:
    raise SamplingError(
      f"{output}/run.json is not a jaxdiff sample manifest ({MANIFEST_FORMAT}); use a new --output."
    )

  def value(manifest: dict, k: str) -> Any:
    if k == "output_format":  # absent: the kind's format from before the setting existed
      return manifest.get(k) or LEGACY_OUTPUT_FORMAT.get(manifest.get("kind"))
    return manifest.get(k)

  diffs = [
    f"{k} {_show(value(old, k))} (folder) vs {_show(value(new, k))} (now)"
    for k in IDENTITY_KEYS
    if value(old, k) != value(new, k)
  ]
  for k in ("checkpoint_step", "params_digest"):
    if k in old and k in new and old[k] != new[k]:
      diffs.append(f"{k} {_show(old[k])} (folder) vs {_show(new[k])} (now)")
  if new["num_samples"] < old["num_samples"]:
    diffs.append(
      f"num_samples {old['num_samples']} (folder) vs {new['num_samples']} (now): a run can be "
      "extended, not shrunk"
    )
  if diffs:
    raise SamplingError(
      f"The output folder {output} belongs to a different run: " + "; ".join(diffs) + ". "
      "Nothing was written. Use a new --output, or repeat the original settings to resume that run."
    )


def labels_summary(spec: str | Sequence[int]) -> str:
  return spec if isinstance(spec, str) else ",".join(str(c) for c in spec)
