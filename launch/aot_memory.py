"""Per-device memory, FLOPs and roofline time of the train and evaluation steps on a named TPU slice, compiled
ahead of time on a machine without TPUs: the `--topology` half of `ardm preflight`, kept under its old name.

    pip install "jax[tpu]"        # adds libtpu (the TPU compiler) matching the installed jax
    python launch/aot_memory.py --config experiments/cifar10.py --topology v4-32
    python launch/aot_memory.py --config experiments/text8.py --topology v5e-16 --config.mesh.fsdp=-1 \
        --config.mesh.data=1

Without libtpu it says so; with --cpu_estimate it compiles for as many fake CPU devices instead (XLA:CPU's buffer
assignment: no TPU layouts, tiling or fusion; a rough guide only, labelled as such wherever it is printed).
"""

from __future__ import annotations

import argparse
import sys


def main(argv=None) -> int:
  from ardm_jax import device_env  # imports no JAX: the compiler environment is set before JAX starts

  parser = argparse.ArgumentParser(
    description=__doc__.split("\n\n")[0], epilog="Config overrides as --config.KEY=VALUE, e.g. --config.mesh.fsdp=-1"
  )
  parser.add_argument("--config", required=True, help="experiment file, e.g. experiments/cifar10.py[:variant]")
  parser.add_argument("--topology", required=True, help=f"one of {', '.join(device_env.TOPOLOGIES)}")
  parser.add_argument(
    "--cpu_estimate",
    action="store_true",
    help="without libtpu: compile for fake CPU devices instead (a rough, labelled estimate)",
  )
  args, overrides = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
  try:
    have_libtpu = device_env.prepare_compiler(args.topology, cpu_estimate=args.cpu_estimate)
    from ardm_jax import slice_report  # imports JAX: after prepare_compiler

    return slice_report.run_topology(args.config, overrides, args.topology, have_libtpu)
  except ValueError as err:
    parser.exit(2, f"aot_memory: error: {err}\n")


if __name__ == "__main__":
  sys.exit(main())
