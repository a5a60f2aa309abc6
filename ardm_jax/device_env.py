"""The environment JAX must find when it starts: fake CPU devices, or the TPU compiler of a named slice.

XLA reads XLA_FLAGS (the fake device count) and JAX_PLATFORMS once, when JAX is imported, so these functions run
before it; this module imports no JAX. `ardm preflight` (jobs/preflight.py) calls them, then imports the modules
that use JAX (preflight.py for `--devices`, slice_report.py for `--topology`).
"""

from __future__ import annotations

import importlib.util
import math
import os
import sys

# name -> (topology, chip config, chips per host, HBM GiB per JAX device). v4-N and v5p-N count TensorCores
# (two per chip, one JAX device per chip in megacore mode); v5e-N and v6e-N count chips.
TOPOLOGIES = {
  "v4-8": ("v4:2x2x1", "megacore", (2, 2, 1), 32),
  "v4-16": ("v4:2x2x2", "megacore", (2, 2, 1), 32),
  "v4-32": ("v4:2x2x4", "megacore", (2, 2, 1), 32),
  "v4-64": ("v4:2x4x4", "megacore", (2, 2, 1), 32),
  "v5e-4": ("v5e:2x2", "default", (2, 2, 1), 16),
  "v5e-8": ("v5e:2x4", "default", (2, 4, 1), 16),
  "v5e-16": ("v5e:4x4", "default", (2, 2, 1), 16),
  "v5e-32": ("v5e:4x8", "default", (2, 2, 1), 16),
  "v5p-8": ("v5p:2x2x1", "megacore", (2, 2, 1), 95),
  "v5p-32": ("v5p:2x2x4", "megacore", (2, 2, 1), 95),
  "v6e-8": ("v6e:2x4", "default", (2, 4, 1), 32),
  "v6e-16": ("v6e:4x4", "default", (2, 2, 1), 32),
}


def with_cpu_device_count(xla_flags: str, count: int) -> str:
  """XLA_FLAGS with `count` fake CPU devices (any earlier device count replaced, other flags kept)."""
  flags = [f for f in xla_flags.split() if "xla_force_host_platform_device_count" not in f]
  return " ".join(flags + [f"--xla_force_host_platform_device_count={count}"])


def set_cpu_devices(count: int) -> None:
  """Fake CPU devices exist only if XLA_FLAGS says so before JAX starts."""
  jax = sys.modules.get("jax")
  if jax is not None:
    if jax.device_count() != count or jax.devices()[0].platform != "cpu":
      raise ValueError(
        f"this process already started JAX with {jax.device_count()} {jax.devices()[0].platform} "
        f"device(s); run `ardm preflight --devices {count}` in a fresh process"
      )
    return
  os.environ["XLA_FLAGS"] = with_cpu_device_count(os.environ.get("XLA_FLAGS", ""), count)
  os.environ["JAX_PLATFORMS"] = "cpu"


def num_topology_devices(topology: str) -> int:
  return math.prod(int(n) for n in TOPOLOGIES[topology][0].split(":")[1].split("x"))


def prepare_compiler(topology: str, cpu_estimate: bool) -> bool:
  """Environment for compiling TPU programs on a machine without TPUs; returns whether libtpu is present."""
  if topology not in TOPOLOGIES:
    raise ValueError(f"unknown --topology {topology!r}; choose one of {', '.join(TOPOLOGIES)}")
  if "jax" in sys.modules:
    raise ValueError("run `ardm preflight --topology` in a fresh process (JAX is already started here)")
  have_libtpu = importlib.util.find_spec("libtpu") is not None
  if not have_libtpu and not cpu_estimate:
    raise ValueError(
      '--topology needs the TPU compiler: `pip install "jax[tpu]"` adds the libtpu matching this '
      "jax (no TPU needed), or use --devices N for the CPU check"
    )
  os.environ["JAX_PLATFORMS"] = "cpu"  # JAX runs on the CPU; libtpu is only the compiler for the slice's devices
  if have_libtpu:  # libtpu looks for a TPU VM's environment at start-up; elsewhere these keep it quiet
    os.environ.setdefault("TPU_SKIP_MDS_QUERY", "1")
    os.environ.setdefault("TPU_ACCELERATOR_TYPE", topology)
    os.environ.setdefault("TPU_WORKER_HOSTNAMES", "localhost")
    os.environ.setdefault("TPU_WORKER_ID", "0")
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  # The state layout is worked out on as many CPU devices as the slice has (creating it runs a little eager code,
  # which compile-only TPU devices cannot), then moved onto the TPU mesh of the same shape.
  os.environ["XLA_FLAGS"] = with_cpu_device_count(os.environ.get("XLA_FLAGS", ""), num_topology_devices(topology))
  return have_libtpu
