"""diffusers folders <-> jaxdiff workdirs from the command line.

    python -m jaxdiff.interop import DIFFUSERS_DIR WORKDIR [--data=tfds/cifar10] [--image_size=N]
        [--checkpoint_dir=DIR] [--overwrite]
    python -m jaxdiff.interop export WORKDIR OUT_DIR [--params=ema|raw] [--step=N] [--overwrite]

`import` makes a workdir that `sample.py --workdir=WORKDIR` samples and
`train.py --config=WORKDIR/config.py --workdir=WORKDIR` fine-tunes (resuming from step 0);
`export` writes a DDPMPipeline / DDIMPipeline folder diffusers' `from_pretrained` reads. An
AutoencoderKL folder imports as an autoencoder workdir (config.latent.vae, `jaxdiff.latents
encode --vae`), and an autoencoder workdir exports as an AutoencoderKL folder. Both check
everything first and write whole or not at all; a non-empty target needs --overwrite.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from jaxdiff import fileio
from jaxdiff.errors import run_cli
from jaxdiff.interop.vae_workdir import export_vae_workdir, import_vae, is_autoencoder_workdir, is_vae_folder
from jaxdiff.interop.workdir import export_workdir, import_diffusers


def _parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(prog="python -m jaxdiff.interop", description=__doc__.split("\n\n")[0])
  sub = p.add_subparsers(dest="command", required=True)
  imp = sub.add_parser(
    "import", help="a diffusers pipeline / UNet2DModel / AutoencoderKL folder -> a jaxdiff workdir"
  )
  imp.add_argument(
    "src",
    help="diffusers folder: a pipeline (unet/, scheduler/), a bare unet folder or an AutoencoderKL folder",
  )
  imp.add_argument("workdir", help="the new jaxdiff workdir")
  imp.add_argument("--data", default=None, help="config.data.name for fine-tuning (e.g. tfds/cifar10)")
  imp.add_argument(
    "--image_size", type=int, default=None, help="image size (default: the config's sample_size)"
  )
  imp.add_argument("--seed", type=int, default=0, help="config.seed of the workdir")
  imp.add_argument(
    "--checkpoint_dir",
    default=None,
    help="where the checkpoint goes (config.train.checkpoint_dir; local or gs://)",
  )
  imp.add_argument("--overwrite", action="store_true", help="replace a non-empty WORKDIR")
  exp = sub.add_parser("export", help="a jaxdiff workdir -> a diffusers pipeline (or AutoencoderKL) folder")
  exp.add_argument("workdir")
  exp.add_argument(
    "out",
    help="the diffusers folder to write (model_index.json, unet/, scheduler/; an autoencoder's config.json)",
  )
  exp.add_argument("--params", default="ema", choices=("ema", "raw"))
  exp.add_argument("--step", type=int, default=None, help="checkpoint step (default: the newest)")
  exp.add_argument("--overwrite", action="store_true", help="replace a non-empty OUT_DIR")
  return p


def _main(argv: Sequence[str] | None) -> int:
  args = _parser().parse_args(argv)
  if args.command == "import":
    vae = is_vae_folder(args.src)
    (import_vae if vae else import_diffusers)(
      args.src, args.workdir, data=args.data, image_size=args.image_size, seed=args.seed,
      checkpoint_dir=args.checkpoint_dir, overwrite=args.overwrite,
    )  # fmt: skip
    what = "an autoencoder workdir: " if vae else ""
    print(f"wrote {what}{os.path.join(args.workdir, 'config.json')} and checkpoint 0")
  else:
    vae = is_autoencoder_workdir(args.workdir)
    (export_vae_workdir if vae else export_workdir)(
      args.workdir, args.out, params=args.params, step=args.step, overwrite=args.overwrite
    )
    parts = ", ".join(sorted(n.rstrip("/") + ("" if "." in n else "/") for n in fileio.listdir(args.out)))
    print(f"wrote {args.out} ({'an AutoencoderKL: ' if vae else ''}{parts})")
  return 0


def main(argv: Sequence[str] | None = None) -> int:
  return run_cli(_main, argv, prog="jaxdiff.interop")


if __name__ == "__main__":
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  sys.exit(main())
