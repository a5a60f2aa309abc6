"""`ardm preflight`: the check to run before renting accelerators for a config.

    ardm preflight --config experiments/cifar10.py --devices 16
    ardm preflight --config experiments/text8.py --topology v5e-16

`--devices N`: the whole life of a run on N fake CPU devices (ardm_jax/preflight.py). `--topology SLICE`: the
real-size steps compiled ahead of time for a TPU slice, with a memory and roofline report (ardm_jax/slice_report.py).
"""

from __future__ import annotations

from ardm_jax import device_env

# The arguments argparse does not know are the config overrides (--config.KEY=VALUE).
TAKES_OVERRIDES = True


def add_parser(sub) -> None:
  p = sub.add_parser(
    "preflight",
    description="check a config before renting hardware: the whole run on N fake CPU "
    "devices (--devices) or a real-size compile for a TPU slice (--topology)",
  )
  p.add_argument("--config", required=True, help="experiment file, e.g. experiments/cifar10.py[:variant]")
  where = p.add_mutually_exclusive_group(required=True)
  where.add_argument("--devices", type=int, help="number of fake CPU devices (e.g. the slice's device count)")
  where.add_argument("--topology", help="TPU slice to compile for, e.g. v4-32, v5e-16 (needs libtpu)")
  p.add_argument(
    "--jobs-devices",
    type=int,
    default=None,
    help="device count of the second process that restores and runs the jobs (default: 3, or 1)",
  )
  p.add_argument("--workdir", default=None, help="where to keep the run (default: a temporary folder, removed)")


def run(args) -> int:
  # JAX reads its device environment when it is imported, so it is set first and the modules that use JAX are
  # imported after it: the two imports below are deliberately not at the top of this module.
  if args.topology:
    have_libtpu = device_env.prepare_compiler(args.topology, cpu_estimate=False)
    from ardm_jax import slice_report  # noqa: PLC0415

    return slice_report.run_topology(args.config, args.overrides, args.topology, have_libtpu)
  if args.devices < 1:
    raise ValueError(f"--devices must be >= 1, got {args.devices}")
  device_env.set_cpu_devices(args.devices)
  from ardm_jax import preflight  # noqa: PLC0415

  return preflight.run_devices(args.config, args.overrides, args.devices, args.jobs_devices, args.workdir)
