"""Per-device memory of the train step on a named TPU slice, compiled ahead of time on a machine without TPUs.

    pip install "jax[tpu]"        # adds libtpu (the TPU compiler) matching the installed jax
    python launch/aot_memory.py --config experiments/cifar10.py --topology v4-32
    python launch/aot_memory.py --config experiments/text8.py --topology v5e-16 --config.mesh.fsdp=-1 \
        --config.mesh.data=1

JAX runs on the CPU; libtpu compiles `compile_train_step(setup)` for the devices of the named topology
(`jax.experimental.topologies.get_topology_desc`), lowered from ShapeDtypeStructs on the config's mesh, so
nothing is allocated. The report is XLA's `compiled.memory_analysis()` for one device: arguments (train state
and batch), outputs, temporaries, and the peak estimate arguments + outputs - aliased (donated) + temporaries.

Without libtpu the script says so and, with --cpu_estimate, compiles for as many fake CPU devices instead.
That is XLA:CPU's buffer assignment (no TPU layouts, tiling padding or TPU fusion), a rough guide only, and
it is labelled as such wherever it is printed.
"""
from __future__ import annotations

import argparse
import importlib.util
import math
import os
import sys
import time

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
# Data sets whose shape is known without loading them (tfds builds and 100 MB downloads are not needed to
# compile): name -> (shape, classes, kind). text8's length comes from data.seq_len.


def parse_args(argv):
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                   epilog="Config overrides as --config.KEY=VALUE, e.g. --config.mesh.fsdp=-1")
  parser.add_argument("--config", required=True, help="experiment file, e.g. experiments/cifar10.py[:variant]")
  parser.add_argument("--topology", required=True, help=f"one of {', '.join(TOPOLOGIES)}")
  parser.add_argument("--cpu_estimate", action="store_true",
                      help="without libtpu: compile for fake CPU devices instead (a rough, labelled estimate)")
  args, overrides = parser.parse_known_args(argv)
  if args.topology not in TOPOLOGIES:
    parser.error(f"unknown --topology {args.topology!r}; choose one of {', '.join(TOPOLOGIES)}")
  return args, overrides


def num_devices(topology: str) -> int:
  return math.prod(int(n) for n in TOPOLOGIES[topology][0].split(":")[1].split("x"))


def data_spec(config):
  from ardm_jax import data
  from ardm_jax.train_state import DataSpec, spec_without_data
  return spec_without_data(config) or DataSpec.of_dataset(data.load(config.data))


def tpu_devices(topology: str):
  from jax.experimental import topologies
  name, chip_config, host_bounds, _ = TOPOLOGIES[topology]
  desc = topologies.get_topology_desc(name, "tpu", chip_config_name=chip_config, chips_per_host_bounds=host_bounds,
                                      num_slices=1, wrap=(False, False, False))
  return list(desc.devices)


def on_devices(setup, devices):
  """The same setup with its mesh and shardings moved onto `devices` (same count, same mesh shape)."""
  import dataclasses
  import jax
  import numpy as np
  from jax.sharding import Mesh, NamedSharding
  mesh = Mesh(np.asarray(devices).reshape(setup.mesh.devices.shape), setup.mesh.axis_names,
              axis_types=setup.mesh.axis_types)
  shardings = jax.tree.map(lambda s: NamedSharding(mesh, s.spec), setup.state_shardings)
  return dataclasses.replace(setup, mesh=mesh, state_shardings=shardings)


def mib(n: float) -> str:
  return f"{n / 2**20:,.1f} MiB"


def main(argv=None) -> int:
  args, overrides = parse_args(sys.argv[1:] if argv is None else argv)
  count = num_devices(args.topology)
  # JAX itself stays on the CPU; libtpu is loaded only as the compiler for the topology's devices.
  os.environ["JAX_PLATFORMS"] = "cpu"
  have_libtpu = importlib.util.find_spec("libtpu") is not None
  if not have_libtpu:
    print("TPU ahead-of-time compile impossible here: the `libtpu` package (the TPU compiler) is not installed; "
          "`pip install \"jax[tpu]\"` adds the version matching this jax.")
    if not args.cpu_estimate:
      print("Pass --cpu_estimate for a rough XLA:CPU estimate on fake CPU devices instead.")
      return 1
  else:
    # libtpu looks for a TPU VM's environment at start-up; on other machines these keep it quiet.
    os.environ.setdefault("TPU_SKIP_MDS_QUERY", "1")
    os.environ.setdefault("TPU_ACCELERATOR_TYPE", args.topology)
    os.environ.setdefault("TPU_WORKER_HOSTNAMES", "localhost")
    os.environ.setdefault("TPU_WORKER_ID", "0")
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  # The state layout is worked out on as many CPU devices as the slice has (creating it runs a little eager
  # code, which compile-only TPU devices cannot), then moved onto the TPU mesh of the same shape.
  flags = [f for f in os.environ.get("XLA_FLAGS", "").split() if "xla_force_host_platform_device_count" not in f]
  os.environ["XLA_FLAGS"] = " ".join(flags + [f"--xla_force_host_platform_device_count={count}"])

  import jax
  import numpy as np
  from ardm_jax import checkpoint, configs, sharding, train
  from ardm_jax.train_state import build_setup, count_params

  config = configs.apply_overrides(configs.load_config_file(args.config), overrides)
  spec = data_spec(config)
  setup = build_setup(config, spec, jax.devices())
  if have_libtpu:
    devices = tpu_devices(args.topology)
    target = f"{args.topology} ({TOPOLOGIES[args.topology][0]}, {len(devices)} x {devices[0].device_kind})"
    setup = on_devices(setup, devices)
  else:
    devices = jax.devices()
    target = f"CPU ESTIMATE for {args.topology}: {len(devices)} fake CPU devices, XLA:CPU buffer assignment"
  batch_size = int(config.train.batch_size)
  sharding.check_batch_divides_mesh(batch_size, setup.mesh)
  sharding.check_param_shardings(setup.abstract_state.params, setup.state_shardings.params, setup.mesh)

  state = checkpoint.abstract_with_shardings(setup.abstract_state, setup.state_shardings)
  batch = jax.ShapeDtypeStruct((batch_size,) + spec.shape, np.int32, sharding=sharding.batch_sharding(setup.mesh))
  key_shape = jax.eval_shape(lambda: jax.random.PRNGKey(0))
  key = jax.ShapeDtypeStruct(key_shape.shape, key_shape.dtype, sharding=sharding.replicated(setup.mesh))
  start = time.time()
  with setup.context():
    compiled = train.compile_train_step(setup).lower(state, batch, key).compile()
  seconds = time.time() - start
  mem = compiled.memory_analysis()
  if mem is None:
    print(f"{target}: the compiler reports no memory analysis on this backend")
    return 1
  peak = mem.argument_size_in_bytes + mem.output_size_in_bytes - mem.alias_size_in_bytes + mem.temp_size_in_bytes
  hbm = TOPOLOGIES[args.topology][3] * 2**30

  print(f"train step of {args.config} ({count_params(setup.abstract_state.params):,} parameters, "
        f"{config.model.name}, dtype {config.model.get('dtype', 'float32')}, remat {config.model.get('remat', False)}) "
        f"compiled in {seconds:.0f}s for {target}")
  print(sharding.describe_layout(setup.mesh, setup.abstract_state, setup.state_shardings))
  print(f"global batch {batch_size} ({batch_size // (setup.mesh.shape['data'] * setup.mesh.shape['fsdp'])} per "
        "data shard)")
  rows = [("arguments (train state + batch)", mem.argument_size_in_bytes), ("outputs", mem.output_size_in_bytes),
          ("aliased (donated state reused)", mem.alias_size_in_bytes), ("temporaries", mem.temp_size_in_bytes),
          ("generated code", mem.generated_code_size_in_bytes),
          ("peak estimate (args + out - alias + temp)", peak)]
  print("| per device | bytes |\n|---|---|")
  for label, value in rows:
    print(f"| {label} | {mib(value)} |")
  if have_libtpu:
    verdict = "fits" if peak < hbm else "DOES NOT FIT"
    print(f"| HBM per device ({args.topology}) | {mib(hbm)}: {verdict} ({100 * peak / hbm:.0f}%) |")
  else:
    print("(CPU ESTIMATE: not TPU numbers; install libtpu for the real per-device memory)")
  return 0


if __name__ == "__main__":
  sys.exit(main())
