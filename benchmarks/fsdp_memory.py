"""FSDP memory per device: the bytes of parameters + optimizer state (Adam, clipping, schedule) + EMA
one device holds for config.parallel.fsdp = 1, 2, 4, 8 on 8 devices, from the train state's
shardings (`jaxdiff.training.state.train_state_shardings`) over `jax.eval_shape`: nothing is
allocated or compiled, so the figures are exact properties of the layout, not measurements.

    python benchmarks/fsdp_memory.py [--configs=cifar10,cifar10_dit:B/2,cifar10_dit:XL/2] [--fsdp=1,2,4,8]

(`name:V` sets config.model.dit_variant = V on configs/<name>.py.)

Runs on 8 forced host CPU devices (XLA_FLAGS=--xla_force_host_platform_device_count=8 is set
when XLA_FLAGS is unset). Activations are not counted (they depend on the batch and remat).
"""

from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
import jax  # noqa: E402

from jaxdiff import parallel  # noqa: E402
from jaxdiff.models import count_params, create_model  # noqa: E402
from jaxdiff.training.state import (  # noqa: E402
  create_optimizer,
  create_train_state,
  state_bytes_per_device,
  train_state_shardings,
)


def rows_for(name: str, fsdps: list[int], variant: str = "") -> list[dict]:
  """One record per fsdp value for configs/<name>.py (with model.dit_variant = variant if given)."""
  c = common.load_config_file(name)
  if variant:
    c.model.dit_variant = variant
  model = create_model(c)
  tx, _ = create_optimizer(c)
  abstract = jax.eval_shape(lambda: create_train_state(c, model, jax.random.key(0), tx))
  out = []
  for f in fsdps:
    c.parallel.fsdp = f
    sh = train_state_shardings(c, model, parallel.mesh_from_config(c), tx)
    out.append(
      dict(
        config=f"configs/{name}.py" + (f" (DiT-{variant})" if variant else ""),
        model=c.model.name,
        params=count_params(abstract.params),
        devices=jax.device_count(),
        fsdp=f,
        fsdp_min_size=int(c.parallel.fsdp_min_size),
        bytes_per_device=state_bytes_per_device(abstract, sh),
        bytes_replicated=state_bytes_per_device(abstract),
      )
    )
  return out


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument(
    "--configs",
    default="cifar10,cifar10_dit:B/2,cifar10_dit:XL/2",
    help="configs/<name>[:dit_variant], comma separated",
  )
  p.add_argument("--fsdp", default="1,2,4,8")
  args = p.parse_args()
  fsdps = [int(x) for x in args.fsdp.split(",")]
  env = common.environment()
  print(
    f"{env['date']}  {env['cpu']}  jax {env['jax']}  {jax.device_count()} devices  XLA_FLAGS={env['xla_flags']}"
  )
  print("| config | params | fsdp | bytes/device | MiB/device | vs fsdp=1 |")
  print("|---|---:|---:|---:|---:|---:|")
  for spec in args.configs.split(","):
    name, _, variant = spec.partition(":")
    if not os.path.exists(common.ROOT / "configs" / f"{name}.py"):
      print(f"| configs/{name}.py | (not in this checkout) | | | | |")
      continue
    recs = rows_for(name, fsdps, variant)
    for r in recs:
      r["ratio"] = r["bytes_per_device"] / r["bytes_replicated"]
      common.append_result("fsdp_memory", {**r, **env})
      print(
        f"| {r['config']} | {r['params']:,} | {r['fsdp']} | {r['bytes_per_device']:,} | "
        f"{r['bytes_per_device'] / 2**20:.1f} | {r['ratio']:.4f} |"
      )


if __name__ == "__main__":
  main()
