"""Train-step time and examples/s on the CPU for 1 device against 8 fake devices (data, FSDP, data x tensor).

    python benchmarks/sharding_cpu.py                        # digits U-Net and pydoc Transformer defaults
    python benchmarks/sharding_cpu.py --configs experiments/digits.py:tiny --steps 5

Each row runs in its own process (the fake device count is fixed when JAX starts): build the sharded state,
compile the train step, run `--warmup` steps, then time `--steps` steps of the real loop (host batch, global
batch assembly, step) and report the median. Fake CPU devices share the same cores, so 8 devices measure the
overhead of partitioning and collectives, not a speed-up; on GPUs or TPUs the same meshes split real work.
"""

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time

REPO = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
DEFAULT_CONFIGS = ("experiments/digits.py", "experiments/local_text.py:pydoc")
LAYOUTS = (("1 device", 1, (1, 1, 1)), ("data", 8, (8, 1, 1)), ("fsdp", 8, (1, 8, 1)), ("data x tensor", 8, (4, 1, 2)))


def worker(config_path: str, sizes, warmup: int, steps: int) -> dict:
  sys.path.insert(0, REPO)
  import jax

  from ardm_jax import configs, data, sharding, train
  from ardm_jax.train_state import DataSpec, build_setup, count_params

  overrides = [f"--config.mesh.{axis}={size}" for axis, size in zip(("data", "fsdp", "tensor"), sizes)]
  config = configs.apply_overrides(configs.load_config_file(os.path.join(REPO, config_path)), overrides)
  dataset = data.load(config.data)
  spec = DataSpec.of_dataset(dataset)
  setup = build_setup(config, spec)
  sharding.check_param_shardings(setup.abstract_state.params, setup.state_shardings.params, setup.mesh)
  batch_size = int(config.train.batch_size)
  state = setup.init_state(0)
  step_fn = train.compile_train_step(setup)
  key = jax.device_put(jax.random.PRNGKey(1), sharding.replicated(setup.mesh))

  def run(step, state):
    local = dataset.train_batch(step, batch_size, 0)
    return step_fn(state, sharding.global_batch(local, setup.mesh), key)

  with setup.context():
    start = time.perf_counter()
    state, metrics = run(0, state)
    jax.block_until_ready(metrics)
    compile_s = time.perf_counter() - start
    for step in range(1, warmup):
      state, metrics = run(step, state)
    jax.block_until_ready(metrics)
    times = []
    for step in range(warmup, warmup + steps):
      start = time.perf_counter()
      state, metrics = run(step, state)
      jax.block_until_ready(metrics)
      times.append(time.perf_counter() - start)
  step_s = statistics.median(times)
  return {
    "params": count_params(setup.abstract_state.params),
    "batch": batch_size,
    "dims": spec.num_steps,
    "mesh": dict(setup.mesh.shape),
    "devices": len(jax.devices()),
    "first_step_s": compile_s,
    "step_s": step_s,
    "examples_per_s": batch_size / step_s,
    "param_mib_per_device": sharding.per_device_bytes(setup.state_shardings.params, setup.abstract_state.params)
    / 2**20,
  }


def main():
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--configs", nargs="+", default=DEFAULT_CONFIGS)
  ap.add_argument("--warmup", type=int, default=2)
  ap.add_argument("--steps", type=int, default=8)
  ap.add_argument("--worker", nargs=3, metavar=("CONFIG", "SIZES", "WARMUP_STEPS"), help=argparse.SUPPRESS)
  args = ap.parse_args()
  if args.worker:
    config_path, sizes, counts = args.worker
    warmup, steps = map(int, counts.split(","))
    print(json.dumps(worker(config_path, [int(s) for s in sizes.split(",")], warmup, steps)))
    return

  cpu = platform.processor() or platform.machine()
  print(
    f"# Train step on CPU: 1 device vs 8 fake devices ({datetime.date.today()}, {cpu}, {os.cpu_count()} "
    f"cores, load average {os.getloadavg()[0]:.1f} at start)\n"
  )
  print(
    "| config | layout | mesh (data, fsdp, tensor) | params | params MiB/device | first step (compile) s "
    "| step ms (median) | examples/s |"
  )
  print("|---|---|---|---|---|---|---|---|")
  for config_path in args.configs:
    for label, devices, sizes in LAYOUTS:
      env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
      env |= {
        "JAX_PLATFORMS": "cpu",
        "TF_CPP_MIN_LOG_LEVEL": "3",
        "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
      }
      cmd = [
        sys.executable,
        os.path.abspath(__file__),
        "--worker",
        config_path,
        ",".join(map(str, sizes)),
        f"{args.warmup},{args.steps}",
      ]
      proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
      if proc.returncode:
        print(f"| {config_path} | {label} | failed: {proc.stderr.strip().splitlines()[-1]} |||||")
        continue
      r = json.loads(proc.stdout.strip().splitlines()[-1])
      mesh = ", ".join(str(r["mesh"][a]) for a in ("data", "fsdp", "tensor"))
      print(
        f"| {config_path} | {label} | ({mesh}) | {r['params']:,} | {r['param_mib_per_device']:.2f} "
        f"| {r['first_step_s']:.1f} | {1000 * r['step_s']:.0f} | {r['examples_per_s']:.1f} |",
        flush=True,
      )


if __name__ == "__main__":
  main()
