"""The `jaxdiff-sample` command (also `python sample.py`): flags -> a `SampleRequest` -> `generate`.

    jaxdiff-sample --workdir=runs/digits --num_samples=50000 [--sampler=dpmpp_2m --num_steps=20]

The model, config and sampler defaults come from the training workdir. Running the same command
again resumes: complete shards are checked and kept, missing or damaged ones generated. Sample i
depends only on --seed and i (not on the batch size or the number of devices or processes).
"""

import os
import sys

from absl import app, flags, logging

from jaxdiff import parallel
from jaxdiff.bulk.request import SampleRequest
from jaxdiff.bulk.run import generate
from jaxdiff.errors import run_cli
from jaxdiff.parallel import define_process_flags
from jaxdiff.perf import setup_compilation_cache
from jaxdiff.training.restore import load_run_config

__all__ = ["main", "run", "request_from_flags"]

PROG = "sample.py"

_WORKDIR = flags.DEFINE_string("workdir", None, "Training workdir (config.json and checkpoints/).")
_NUM = flags.DEFINE_integer("num_samples", None, "How many samples in total (a larger value extends a run).")
_OUTPUT = flags.DEFINE_string("output", None, "Output folder (default WORKDIR/generated).")
_SAMPLER = flags.DEFINE_string(
  "sampler",
  None,
  "ddpm | ddim | dpmpp_2m | dpmpp_3m | dpmpp_2m_sde | unipc | euler | euler_ancestral | heun "
  "(default config.sample.sampler).",
)
_STEPS = flags.DEFINE_integer("num_steps", None, "Sampling steps (default config.sample.num_steps).")
_ETA = flags.DEFINE_float(
  "eta",
  None,
  "DDIM / Euler-ancestral stochasticity (default: the config's for its own "
  "sampler, else the sampler's default).",
)
_SPACING = flags.DEFINE_string(
  "spacing", None, "leading | trailing | linspace (default config.sample.spacing)."
)
_GRID_KIND = flags.DEFINE_string(
  "grid",
  None,
  "Noise grid: karras | logsnr | uniform | flow | leading | trailing | linspace (chains) "
  "(default config.sample.grid; '': the process's own).",
)
_RHO = flags.DEFINE_float("rho", None, "--grid=karras: the exponent (default config.sample.rho, 7).")
_SHIFT = flags.DEFINE_float("shift", None, "--grid=flow: SD3's shift (default config.diffusion.flow_shift).")
_SIGMA_MIN = flags.DEFINE_float(
  "sigma_min", None, "--grid=karras: the smallest sigma/alpha (default: the process's)."
)
_SIGMA_MAX = flags.DEFINE_float(
  "sigma_max", None, "--grid=karras: the largest sigma/alpha (default: the process's)."
)
_ORDER = flags.DEFINE_integer("order", None, "unipc: order 1, 2 or 3 (default config.sample.order).")
_S_CHURN = flags.DEFINE_float(
  "s_churn", None, "euler / heun: EDM's stochastic churn (default config.sample.s_churn)."
)
_CLIP = flags.DEFINE_float(
  "clip_x0", None, "Clip predicted x0 to [-c, c]; 0 disables (default config.sample.clip_x0)."
)
_GUIDANCE = flags.DEFINE_float(
  "guidance_scale",
  None,
  "Classifier-free guidance scale, class- or context-conditional "
  "models (default config.sample.guidance_scale; 1 = plain conditional).",
)
_RESCALE = flags.DEFINE_float(
  "guidance_rescale",
  None,
  "Guidance rescale phi in [0, 1] (Lin et al. 2024): the guided output keeps the conditional "
  "one's std, in the model's output space (default config.sample.guidance_rescale; 0 = off).",
)
_INTERVAL = flags.DEFINE_string(
  "guidance_interval",
  None,
  "Guidance only where the model time t is in [lo, hi], plain conditional elsewhere: 'lo,hi' "
  "in the process's time (timesteps on vp chains, sigma on edm, t in [0, 1] otherwise; "
  "default config.sample.guidance_interval; '' = every step).",
)
_SCHEDULE = flags.DEFINE_string(
  "guidance_schedule",
  None,
  "A guidance scale per step instead of --guidance_scale: 'linear:a,b' or 'cosine:a,b' (a at "
  "the noisiest step to b at the last) or num_steps comma-separated scales (default "
  "config.sample.guidance_schedule; '' = the scale at every step).",
)
_LABELS = flags.DEFINE_string(
  "labels",
  None,
  "Class-conditional models: 'uniform' (default: sample i gets class "
  "i mod num_classes), 'balanced' (the same, refused unless --num_samples is a multiple of "
  "num_classes: equal counts per class), a class (3), a list cycled over the samples (0,1,2) or "
  "'none' (the null class).",
)
_CONTEXT = flags.DEFINE_string(
  "context",
  None,
  "Cross-attention models: 'uniform' (caption models: the 60 digit "
  "captions, cycled; the default), 'none' (null context), a caption ('3 thick "
  "slanted-right'), captions separated by ';' (cycled) or a .npy of tokens / embeddings.",
)
_COND_SOURCE = flags.DEFINE_string(
  "cond_source",
  None,
  "Image-conditioned models (e.g. configs/digits_sr.py): "
  "digits_test (default for digits) | digits_train | FILE.npz ('images', 'x' or "
  "'x_cond'); sample i is conditioned on source image i mod N.",
)
_INPAINT_SOURCE = flags.DEFINE_string(
  "inpaint_source",
  None,
  "Inpainting: the images to complete, digits_test | "
  "digits_train | FILE.npz ('images' uint8 or 'x' floats); sample i completes "
  "source image i mod N. Needs --inpaint_mask.",
)
_INPAINT_MASK = flags.DEFINE_string(
  "inpaint_mask",
  None,
  "Inpainting: the region to KEEP (the rest is generated): "
  "top_half | bottom_half | left_half | right_half | center | border | FILE.npy "
  "(1 = keep; [H, W], [H, W, C] or [N, H, W, C]).",
)
_RESAMPLE = flags.DEFINE_integer(
  "repaint_resample", 1, "Inpainting: RePaint resampling, each jump repeated r - 1 times (1 = none)."
)
_JUMP = flags.DEFINE_integer("repaint_jump", 1, "Inpainting: RePaint jump length in sampler steps.")
_PASTE = flags.DEFINE_boolean(
  "paste_known",
  True,
  "Inpainting: the kept region of the output is exactly the source (else the model's own last step).",
)
_SEED = flags.DEFINE_integer("seed", 0, "Sample i uses the key fold_in(key(seed), i).")
_BATCH = flags.DEFINE_integer(
  "batch_size",
  None,
  "Samples per compiled call over all processes "
  "(default config.sample.batch_size); does not change the samples.",
)
_SHARD = flags.DEFINE_integer("shard_size", 1000, "Samples per .npz shard (keep it when resuming).")
_PARAMS = flags.DEFINE_string("params", "ema", "ema | raw: the averaged or the raw trained weights.")
_STEP = flags.DEFINE_integer(
  "checkpoint_step",
  None,
  "Checkpoint step (default the newest readable one; when resuming, the step the run started from).",
)
_TRAJ = flags.DEFINE_boolean(
  "trajectory", False, "Also write trajectory.png: the reverse process of a few samples."
)
_GRID = flags.DEFINE_integer("grid_size", 100, "Samples shown in grid.png.")
_FORMAT = flags.DEFINE_string(
  "output_format",
  None,
  "uint8 | float: image-shaped samples as uint8 pixels or as the model's float32 values (default: "
  "uint8 for 1- or 3-channel image data, float for anything else; 2-D points are float). Latent "
  "models (config.latent.vae): the decoded images.",
)
_KEEP_LATENTS = flags.DEFINE_boolean(
  "keep_latents",
  False,
  "Latent models: also store the float32 latents, as shards of the same names in OUTPUT/latents/ "
  "(the images in OUTPUT are always the decoded ones).",
)
_INIT_PROCESSES = define_process_flags()
flags.adopt_module_key_flags(parallel)  # listed by --help
flags.mark_flags_as_required(["workdir", "num_samples"])


def request_from_flags() -> SampleRequest:
  """The parsed flags as one SampleRequest (None: the workdir config's)."""
  return SampleRequest(
    num_samples=_NUM.value,
    sampler=_SAMPLER.value,
    num_steps=_STEPS.value,
    eta=_ETA.value,
    spacing=_SPACING.value,
    grid=_GRID_KIND.value,
    rho=_RHO.value,
    shift=_SHIFT.value,
    sigma_min=_SIGMA_MIN.value,
    sigma_max=_SIGMA_MAX.value,
    order=_ORDER.value,
    s_churn=_S_CHURN.value,
    clip_x0=_CLIP.value,
    guidance_scale=_GUIDANCE.value,
    guidance_rescale=_RESCALE.value,
    guidance_interval=_INTERVAL.value,
    guidance_schedule=_SCHEDULE.value,
    labels=_LABELS.value,
    context=_CONTEXT.value,
    cond_source=_COND_SOURCE.value,
    inpaint_source=_INPAINT_SOURCE.value,
    inpaint_mask=_INPAINT_MASK.value,
    repaint_resample=_RESAMPLE.value,
    repaint_jump=_JUMP.value,
    paste_known=_PASTE.value,
    seed=_SEED.value,
    shard_size=_SHARD.value,
    params=_PARAMS.value,
    output_format=_FORMAT.value,
    keep_latents=_KEEP_LATENTS.value,
    batch_size=_BATCH.value,
    checkpoint_step=_STEP.value,
    trajectory=_TRAJ.value,
    grid_size=_GRID.value,
  )


def _sample(_argv) -> None:
  _INIT_PROCESSES()
  config = load_run_config(_WORKDIR.value)  # the workdir's compilation cache: process-wide, set once here
  setup_compilation_cache(str(config.train.compilation_cache_dir))
  generate(_WORKDIR.value, _OUTPUT.value, request_from_flags())


def main(argv) -> int:
  """absl main: one line and exit status 2 for a user error, a traceback for a bug."""
  if len(argv) > 1:
    print(f"{PROG}: error: unexpected arguments {argv[1:]}", file=sys.stderr)
    return 2
  logging.set_verbosity(logging.WARNING)
  return run_cli(_sample, prog=PROG)


def run() -> None:
  """The command's entry point (the console script and sample.py): --help lists this module's flags."""
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  for flag in flags.FLAGS.get_key_flags_for_module(sys.modules[__name__]):
    flags.FLAGS.register_key_flag_for_module(sys.argv[0], flag)
  app.run(main)
