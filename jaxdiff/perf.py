"""CPU / XLA performance settings, applied before JAX creates its backend.

XLA reads ``XLA_FLAGS`` once, when the first backend is created (the first ``jax.devices()``,
array or ``jit`` call), so these settings must run before that: at the top of a script,
before anything touches a device. ``train.py`` and ``sample.py`` call
``configure_performance()`` first thing; a user script does the same::

    from jaxdiff.perf import configure_performance
    configure_performance()          # before any jax computation
    import jax, jaxdiff ...

What it does (measured on a 2-core AMD EPYC (Zen 5) VM under load, jax 0.10.2, fp32; figures
in ``benchmarks/BENCHMARKS.md``):

* By default, only glibc malloc: raise the mmap threshold and the trim threshold
  (``mallopt``), so large activation buffers are reused from the heap instead of being
  mmap'ed, page-faulted and unmapped at every step. Applied in-process through ``mallopt``;
  ``GLIBC_TUNABLES`` (which glibc only reads at process start) is exported too, so child
  processes get the same.
* ``disable_ynn_fusions=True`` (opt-in) appends ``--xla_cpu_experimental_ynn_fusion_type=``
  (no experimental YNNPACK fusions). An earlier study on a Zen 3 machine measured +34 % for
  the small UNet's training with it; on this Zen 5 machine the A/B went the other way
  (training ratio to diffusers 0.63 -> 0.75 for tiny and 0.86 -> 1.14 for small *without*
  it; compile 20-25 % faster without it), so XLA's default is kept unless asked for.

Only the CPU backend is affected: the XLA flag is ignored by GPU/TPU compilers, and the
malloc settings only change host allocations. Flags the user already put in ``XLA_FLAGS``
win: nothing is clobbered, only missing flags are appended.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import sys

__all__ = ["configure_performance", "CPU_XLA_FLAGS", "YNN_OFF_FLAGS", "MALLOC_MMAP_THRESHOLD",
           "MALLOC_TRIM_THRESHOLD", "backend_initialized"]

log = logging.getLogger(__name__)

# flag -> value. An empty value is meaningful (an empty list of fusion types).
CPU_XLA_FLAGS: dict[str, str] = {}
YNN_OFF_FLAGS: dict[str, str] = {
    "--xla_cpu_experimental_ynn_fusion_type": "",
}

# glibc's largest allowed mmap threshold on 64-bit (DEFAULT_MMAP_THRESHOLD_MAX = 32 MiB) and a
# 4 GiB trim threshold: freed blocks stay in the heap for the next step.
MALLOC_MMAP_THRESHOLD = 32 * 1024 * 1024
MALLOC_TRIM_THRESHOLD = 4 * 1024 * 1024 * 1024
_M_TRIM_THRESHOLD = -1   # mallopt parameter numbers from <malloc.h>
_M_MMAP_THRESHOLD = -3

_applied: dict | None = None


def backend_initialized() -> bool:
  """Whether JAX has already created a backend (then XLA_FLAGS changes have no effect)."""
  if "jax" not in sys.modules:
    return False
  try:
    from jax._src import xla_bridge
    return bool(xla_bridge.backends_are_initialized())
  except Exception:   # private API moved: assume the worst only if devices were listed
    return False


def _append_xla_flags(flags: dict[str, str]) -> list[str]:
  current = os.environ.get("XLA_FLAGS", "")
  present = {tok.split("=", 1)[0] for tok in current.split()}
  added = [f"{name}={value}" for name, value in flags.items() if name not in present]
  if added:
    os.environ["XLA_FLAGS"] = " ".join([current] + added).strip()
  return added


def _tune_malloc() -> bool:
  """mallopt(M_MMAP_THRESHOLD, 32 MiB) and mallopt(M_TRIM_THRESHOLD, 4 GiB) on glibc."""
  tunables = (f"glibc.malloc.mmap_threshold={MALLOC_MMAP_THRESHOLD}:"
              f"glibc.malloc.trim_threshold={MALLOC_TRIM_THRESHOLD}")
  if "GLIBC_TUNABLES" not in os.environ:
    os.environ["GLIBC_TUNABLES"] = tunables   # for child processes (read at their start)
  if not sys.platform.startswith("linux"):
    return False
  try:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    mallopt = libc.mallopt
  except (OSError, AttributeError):   # musl or another libc without mallopt
    return False
  mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
  mallopt.restype = ctypes.c_int
  ok = mallopt(_M_MMAP_THRESHOLD, MALLOC_MMAP_THRESHOLD) == 1
  # The trim threshold is an int in mallopt: clamp to its range (2 GiB - 1 still never trims
  # at our scale).
  ok &= mallopt(_M_TRIM_THRESHOLD, min(MALLOC_TRIM_THRESHOLD, 2**31 - 1)) == 1
  return bool(ok)


def configure_performance(cpu_flags: bool = True, malloc: bool = True,
                          disable_ynn_fusions: bool = False,
                          extra_xla_flags: dict[str, str] | None = None) -> dict:
  """Apply jaxdiff's CPU performance settings; call before JAX initialises its backend.

  Args:
    cpu_flags: append ``CPU_XLA_FLAGS`` (currently none) to ``XLA_FLAGS`` (flags the user set
      are kept).
    malloc: glibc malloc thresholds (in-process ``mallopt``; ``GLIBC_TUNABLES`` for children).
    disable_ynn_fusions: also append ``YNN_OFF_FLAGS`` (see the module docstring: machine
      dependent, measured slower on Zen 5, faster on Zen 3).
    extra_xla_flags: more ``{"--flag": "value"}`` to append the same way.

  Returns what was applied: ``{"xla_flags_added": [...], "malloc": bool,
  "backend_was_initialized": bool}``. Calling it again is harmless. If the backend already
  exists, the XLA flags cannot take effect any more: a warning says so.
  """
  global _applied
  flags = dict(CPU_XLA_FLAGS) if cpu_flags else {}
  if disable_ynn_fusions:
    flags.update(YNN_OFF_FLAGS)
  flags.update(extra_xla_flags or {})
  late = backend_initialized()
  added = _append_xla_flags(flags)
  if late and added:
    log.warning("configure_performance() ran after JAX created its backend: the XLA flags %s "
                "take effect only in new processes. Call it before any JAX computation.", added)
  tuned = _tune_malloc() if malloc else False
  result = {"xla_flags_added": added, "malloc": tuned, "backend_was_initialized": late}
  _applied = result if _applied is None else {**_applied, **result,
                                               "xla_flags_added": _applied["xla_flags_added"] + added}
  return result
