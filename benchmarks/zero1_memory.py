"""Per-device memory and step time of the train step with ZeRO-1 (config.mesh.zero1) off and on.

    python benchmarks/zero1_memory.py                                    # digits U-Net, 8 fake CPU devices
    python benchmarks/zero1_memory.py --configs experiments/cifar10.py --shrink --batch-size 32

Each config runs in its own process with `--devices` fake CPU devices (the count is fixed when JAX starts) and a
data-parallel mesh. For zero1 off and on it builds the sharded state, compiles the train step with the setup's
shardings (as train.py does), reads XLA's per-device memory analysis of the compiled step (arguments: the state
and the batch; temporaries; outputs, of which the donated state aliases the arguments), counts the collectives
XLA inserted, and times `--steps` steps on random data. The last column is the largest difference between the
parameters after the steps with zero1 off and on. Fake CPU devices share the host's cores: the step times show
the cost of the extra collectives, not what a GPU or TPU would see. `--shrink` applies configs.shrink_network
(the paper-sized networks do not compile in reasonable time on a CPU).
"""

import argparse
import copy
import datetime
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time

REPO = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
DEFAULT_CONFIGS = ("experiments/digits.py",)
COLLECTIVE = re.compile(r"\b(all-reduce|all-gather|reduce-scatter|all-to-all|collective-permute)(?:-start)?\(")


def worker(config_path: str, shrink: bool, batch_size: int | None, warmup: int, steps: int) -> list[dict]:
  sys.path.insert(0, REPO)
  import jax
  import numpy as np

  from ardm_jax import configs, data, sharding, train
  from ardm_jax.train_state import DataSpec, build_setup, count_params, spec_without_data

  results, params_off = [], None
  base = configs.load_config_file(os.path.join(REPO, config_path))  # read once: both runs get the same config
  for zero1 in (False, True):
    config = copy.deepcopy(base)
    overrides = [
      "--config.mesh.data=-1",
      "--config.mesh.fsdp=1",
      "--config.mesh.tensor=1",
      f"--config.mesh.zero1={zero1}",
    ]
    if batch_size:
      overrides.append(f"--config.train.batch_size={batch_size}")
    config = configs.apply_overrides(config, overrides)
    if shrink:
      with config.unlocked():
        configs.shrink_network(config)
    spec = spec_without_data(config) or DataSpec.of_dataset(data.load(config.data))
    setup = build_setup(config, spec)
    batch_np = np.random.default_rng(0).integers(
      0, spec.num_classes, (int(config.train.batch_size),) + spec.shape, dtype=np.int32
    )
    state = setup.init_state(0)
    step_fn = train.compile_train_step(setup)
    with setup.context():
      key = jax.device_put(jax.random.PRNGKey(1), sharding.replicated(setup.mesh))
      batch = sharding.global_batch(batch_np, setup.mesh)
      start = time.perf_counter()
      compiled = step_fn.lower(state, batch, key).compile()
      compile_s = time.perf_counter() - start
      mem = compiled.memory_analysis()
      collectives = {}
      for name in COLLECTIVE.findall(compiled.as_text()):
        collectives[name] = collectives.get(name, 0) + 1
      times = []
      for i in range(warmup + steps):
        start = time.perf_counter()
        state, metrics = compiled(state, batch, key)
        jax.block_until_ready(metrics)
        if i >= warmup:
          times.append(time.perf_counter() - start)
    params = jax.tree.map(np.asarray, jax.device_get(state.params))
    if zero1:
      diff = max(jax.tree.leaves(jax.tree.map(lambda a, b: float(np.max(np.abs(a - b))), params_off, params)))
    else:
      params_off, diff = params, 0.0
    abstract, shardings = setup.abstract_state, setup.state_shardings
    mib = lambda n: n / 2**20
    results.append(
      {
        "config": config_path + (" (shrunk)" if shrink else ""),
        "zero1": zero1,
        "params": count_params(abstract.params),
        "batch": int(config.train.batch_size),
        "mesh": dict(setup.mesh.shape),
        "state_mib": mib(sharding.per_device_bytes(shardings, abstract)),
        "opt_ema_mib": mib(
          sharding.per_device_bytes(
            (shardings.opt_state, shardings.ema_params), (abstract.opt_state, abstract.ema_params)
          )
        ),
        "argument_mib": mib(mem.argument_size_in_bytes),
        "output_mib": mib(mem.output_size_in_bytes),
        "alias_mib": mib(mem.alias_size_in_bytes),
        "temp_mib": mib(mem.temp_size_in_bytes),
        "collectives": collectives,
        "compile_s": compile_s,
        "step_ms": 1000 * statistics.median(times),
        "max_param_diff": diff,
        "loss": float(metrics["loss"]),
      }
    )
  return results


def main():
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--configs", nargs="+", default=DEFAULT_CONFIGS)
  ap.add_argument("--devices", type=int, default=8, help="fake CPU devices, all on the data axis")
  ap.add_argument("--shrink", action="store_true", help="configs.shrink_network: a CPU-sized network")
  ap.add_argument("--batch-size", type=int, default=None, help="global batch (default: the config's)")
  ap.add_argument("--warmup", type=int, default=1)
  ap.add_argument("--steps", type=int, default=5)
  ap.add_argument("--worker", metavar="CONFIG", help=argparse.SUPPRESS)
  args = ap.parse_args()
  if args.worker:
    print(json.dumps(worker(args.worker, args.shrink, args.batch_size, args.warmup, args.steps)))
    return

  cpu = platform.processor() or platform.machine()
  print(
    f"# Train step with ZeRO-1 off and on, {args.devices} fake CPU devices, data parallel "
    f"({datetime.date.today()}, {cpu}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at start)\n"
  )
  print(
    "Per device, MiB. state: the whole train state's shard; opt+EMA: Adam mu, nu and the EMA parameters; "
    "arguments / temp / output (aliased: donated): XLA's memory analysis of the compiled step.\n"
  )
  print(
    "| config | zero1 | params | batch | state | opt+EMA | arguments | temp | output (aliased) | collectives "
    "| compile s | step ms | max param diff |"
  )
  print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
  for config_path in args.configs:
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env |= {
      "JAX_PLATFORMS": "cpu",
      "TF_CPP_MIN_LOG_LEVEL": "3",
      "XLA_FLAGS": f"--xla_force_host_platform_device_count={args.devices}",
    }
    cmd = [
      sys.executable,
      os.path.abspath(__file__),
      "--worker",
      config_path,
      "--warmup",
      str(args.warmup),
      "--steps",
      str(args.steps),
    ] + (["--shrink"] if args.shrink else [])
    if args.batch_size:
      cmd += ["--batch-size", str(args.batch_size)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=3600)
    if proc.returncode:
      print(f"| {config_path} | failed: {proc.stderr.strip().splitlines()[-1]} |||||||||||")
      continue
    for r in json.loads(proc.stdout.strip().splitlines()[-1]):
      coll = ", ".join(f"{n} {name}" for name, n in sorted(r["collectives"].items())) or "none"
      print(
        f"| {r['config']} | {'on' if r['zero1'] else 'off'} | {r['params']:,} | {r['batch']} "
        f"| {r['state_mib']:.2f} | {r['opt_ema_mib']:.2f} | {r['argument_mib']:.2f} | {r['temp_mib']:.2f} "
        f"| {r['output_mib']:.2f} ({r['alias_mib']:.2f}) | {coll} | {r['compile_s']:.1f} | {r['step_ms']:.0f} "
        f"| {r['max_param_diff']:.1e} |",
        flush=True,
      )


if __name__ == "__main__":
  main()
