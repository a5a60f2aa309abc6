"""Compile time, per-device memory and CPU step time: the networks' old settings against the new ones.

    flock /tmp/heavy.lock env PYTHONPATH=DIR_WITH_LIBTPU python benchmarks/compile_and_step.py

In one process, for each configuration two variants of the network:
  old  model.remat as a bool as the config had it before remat policies existed (PRE_POLICY_REMAT for the paper
       configs, else any remat -> True: every block, no policy), attention_impl='plain', scan_layers=False (every
       block an unrolled Python loop, as before these options existed)
  new  the config's remat choice, attention through jax.nn.dot_product_attention ('xla' unless the config names
       one), scan_layers=True (each run of identical blocks compiled once with nn.scan)

and prints two tables of medians:
  * CPU train step (`--step_configs`, default experiments/digits.py and experiments/local_text.py:pydoc): the
    jitted train step on one CPU device, its compile time and the median of `--steps` steps after one warm-up;
  * ahead-of-time compile of the real-size train step (`--aot`, default experiments/cifar10.py for v4-32 and
    experiments/text8.py for v5e-16), through ardm_jax.slice_report's topology code: with libtpu importable the TPU
    compiler and its memory analysis (the numbers `ardm preflight --topology` prints); with `--cpu_estimate` (or
    no libtpu) XLA:CPU on as many fake CPU devices as the slice has, whose memory figures are only indicative.
    Real-size compiles need several GiB of RAM: run the script under `flock /tmp/heavy.lock` on shared machines.

Times are wall-clock on whatever machine runs this. On a shared machine they swing several-fold with the load
(a text8 compile took 20 s on a quiet 2-core machine and 159 s under a load of 2-24): `--repeat N` compiles every
variant N times, interleaved, and prints medians; each table row also gives the 1-minute load average seen
around its compiles. `benchmarks/compile_breakdown.py` splits one compile into libtpu's stages and kernels.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ardm_jax import device_env  # pylint: disable=wrong-import-position  (no JAX import yet)

DEFAULT_STEP_CONFIGS = ("experiments/digits.py", "experiments/local_text.py:pydoc")
DEFAULT_AOT = ("experiments/cifar10.py@v4-32", "experiments/text8.py@v5e-16")
# model.remat of the paper configs before the per-block-kind choices (commit 522a3cc^): text8 set none (False),
# cifar10 and sc09 remat=True. The bool rule below would read text8's 'attention' as True.
PRE_POLICY_REMAT = {
  "text8.py": False,
  "text8_upscale.py": False,
  "cifar10.py": True,
  "cifar10_upscale4.py": True,
  "sc09.py": True,
  "sc09_upscale.py": True,
}


def variant_model(model_cfg, variant: str, scan_layers: bool = True, path: str | None = None) -> dict:
  """The model config of `variant` ('old' or 'new'; `scan_layers` for 'new') as a plain dict (`path`: the config
  file, whose pre-policy remat PRE_POLICY_REMAT may record)."""
  model = model_cfg.to_dict()
  remat = model.get("remat", False)
  has_attention = model["name"] in ("unet", "transformer")
  if variant == "old":
    old = PRE_POLICY_REMAT.get(os.path.basename(path.split(":")[0])) if path else None
    model["remat"] = old if old is not None else remat not in (False, None, "none")
    model["scan_layers"] = False
    if has_attention:
      model["attention_impl"] = "plain"
  else:
    model["scan_layers"] = bool(scan_layers)
    if has_attention and model.get("attention_impl", "plain") == "plain":
      model["attention_impl"] = "xla"
  return model


def variants_with_remat(variants, remat_choices):
  """(variant, remat override or None) pairs: 'new' once per --remat choice."""
  out = []
  for variant in variants:
    choices = remat_choices if variant == "new" and remat_choices else [None]
    out.extend((variant, choice) for choice in choices)
  return out


def with_model(config, model: dict):
  import ml_collections  # pylint: disable=import-outside-toplevel

  config = ml_collections.ConfigDict(config.to_dict())
  config.model = ml_collections.ConfigDict(model)
  return config


def describe(model: dict) -> str:
  parts = [f"remat={model.get('remat')}", f"scan={model.get('scan_layers')}"]
  if "attention_impl" in model:
    parts.append(f"attn={model['attention_impl']}")
  return " ".join(parts)


def step_times(config, spec, steps: int) -> tuple[float, float]:
  """(compile seconds, median step seconds) of the train step on one CPU device."""
  import jax  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel

  from ardm_jax import sharding, train  # pylint: disable=import-outside-toplevel
  from ardm_jax.train_state import build_setup  # pylint: disable=import-outside-toplevel

  setup = build_setup(config, spec, [jax.devices("cpu")[0]])
  state = setup.init_state(0)
  rng = np.random.default_rng(0)
  batch = sharding.global_batch(
    rng.integers(0, spec.num_classes, (int(config.train.batch_size),) + spec.shape).astype(np.int32), setup.mesh
  )
  key = jax.device_put(jax.random.PRNGKey(0), sharding.replicated(setup.mesh))
  with setup.context():
    start = time.perf_counter()
    compiled = train.compile_train_step(setup).lower(state, batch, key).compile()
    compile_s = time.perf_counter() - start
    state, metrics = compiled(state, batch, key)  # warm-up
    jax.block_until_ready(metrics)
    times = []
    for _ in range(steps):
      start = time.perf_counter()
      state, metrics = compiled(state, batch, key)
      jax.block_until_ready(metrics)
      times.append(time.perf_counter() - start)
  return compile_s, statistics.median(times)


def aot_compile(config, topology: str, have_libtpu: bool) -> tuple[float, float, int]:
  """(trace + lower seconds, compile seconds, peak bytes per device) of the real-size train step for `topology`."""
  import jax  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel

  from ardm_jax import (  # pylint: disable=import-outside-toplevel
    checkpoint,
    sharding,
    slice_report,  # pylint: disable=import-outside-toplevel
    train,
  )
  from ardm_jax.train_state import build_setup, data_spec  # pylint: disable=import-outside-toplevel

  spec = data_spec(config)
  n = device_env.num_topology_devices(topology)
  setup = build_setup(config, spec, jax.devices("cpu")[:n])
  if have_libtpu:
    setup = slice_report.on_devices(setup, slice_report.tpu_devices(topology))
  state = checkpoint.abstract_with_shardings(setup.abstract_state, setup.state_shardings)
  key_shape = jax.eval_shape(lambda: jax.random.PRNGKey(0))
  key = jax.ShapeDtypeStruct(key_shape.shape, key_shape.dtype, sharding=sharding.replicated(setup.mesh))
  batch = jax.ShapeDtypeStruct(
    (int(config.train.batch_size),) + spec.shape, np.int32, sharding=sharding.batch_sharding(setup.mesh)
  )
  with setup.context():
    start = time.perf_counter()
    lowered = train.compile_train_step(setup).lower(state, batch, key)
    lower_s = time.perf_counter() - start
    start = time.perf_counter()
    compiled = lowered.compile()
    compile_s = time.perf_counter() - start
  _, peak = slice_report.peak_memory(compiled)
  return lower_s, compile_s, peak


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument(
    "--step_configs",
    nargs="*",
    default=list(DEFAULT_STEP_CONFIGS),
    help="configs (path[:variant]) whose train step is timed on one CPU device",
  )
  parser.add_argument(
    "--aot",
    nargs="*",
    default=list(DEFAULT_AOT),
    help="path[:variant]@TOPOLOGY pairs compiled ahead of time for a TPU slice",
  )
  parser.add_argument("--steps", type=int, default=5, help="timed CPU steps per variant (after one warm-up)")
  parser.add_argument("--variants", nargs="+", default=["old", "new"], choices=["old", "new"])
  parser.add_argument(
    "--remat",
    nargs="*",
    default=[],
    help="run the 'new' variant once per model.remat choice given here (default: the config's)",
  )
  parser.add_argument(
    "--new_scan_layers",
    type=int,
    default=1,
    choices=[0, 1],
    help="scan_layers of the 'new' variant (0: the other new settings with unrolled layers)",
  )
  parser.add_argument(
    "--repeat",
    type=int,
    default=1,
    help="AOT compiles per variant (interleaved); the table gives medians and the range",
  )
  parser.add_argument(
    "--cpu_estimate",
    action="store_true",
    help="compile the --aot configs with XLA:CPU on fake devices even if libtpu is importable",
  )
  args = parser.parse_args(argv)

  aot = [item.rsplit("@", 1) for item in args.aot]
  have_libtpu = False
  if aot:
    topologies = {topology for _, topology in aot}
    counts = {device_env.num_topology_devices(t) for t in topologies}
    if len(counts) > 1:
      raise ValueError(f"--aot topologies {sorted(topologies)} have different device counts; run them separately")
    # Sets up JAX (CPU platform, fake device count, libtpu's environment) before it is imported.
    have_libtpu = device_env.prepare_compiler(aot[0][1], True)
    have_libtpu = have_libtpu and not args.cpu_estimate

  import jax  # pylint: disable=import-outside-toplevel

  from ardm_jax import configs  # pylint: disable=import-outside-toplevel
  from ardm_jax.train_state import data_spec  # pylint: disable=import-outside-toplevel

  print(
    f"jax {jax.__version__}, {os.cpu_count()} CPU cores; AOT compiler: "
    f"{'libtpu (TPU memory analysis)' if have_libtpu else 'XLA:CPU estimate on fake devices'}"
  )

  if args.step_configs:
    print("\n| config | variant | settings | step compile | median step (CPU, 1 device) |")
    print("|---|---|---|---|---|")
    for path in args.step_configs:
      base = configs.load_config_file(path)
      spec = data_spec(base)
      for variant, remat in variants_with_remat(args.variants, args.remat):
        model = variant_model(base.model, variant, args.new_scan_layers, path)
        if remat is not None:
          model["remat"] = remat
        compile_s, step_s = step_times(with_model(base, model), spec, args.steps)
        print(f"| {path} | {variant} | {describe(model)} | {compile_s:.1f} s | {1e3 * step_s:.0f} ms |", flush=True)

  if aot:
    target = "libtpu" if have_libtpu else "XLA:CPU estimate"
    times = "median of " + str(args.repeat) if args.repeat > 1 else "one run"
    print(
      f"\n| config | slice | variant | settings | trace+lower | compile ({target}; {times}) | compile ratio "
      "old / this | peak memory per device | load (1 min) |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for path, topology in aot:
      base = configs.load_config_file(path)
      hbm = device_env.TOPOLOGIES[topology][3]
      rows = []
      for variant, remat in variants_with_remat(args.variants, args.remat):
        model = variant_model(base.model, variant, args.new_scan_layers, path)
        if remat is not None:
          model["remat"] = remat
        rows.append((variant, model, {"lower": [], "compile": [], "load": []}))
      # Repeats interleave the variants, so a change of machine load hits all of them alike.
      for _ in range(args.repeat):
        for _, model, runs in rows:
          load_before = os.getloadavg()[0]
          if runs.get("error"):
            continue
          try:
            lower_s, compile_s, peak = aot_compile(with_model(base, model), topology, have_libtpu)
          except Exception as err:  # pylint: disable=broad-except  (the TPU compiler's out-of-HBM refusal)
            if "RESOURCE_EXHAUSTED" not in str(err):
              raise
            runs["error"] = str(err).split("RESOURCE_EXHAUSTED:")[-1].strip().splitlines()[0]
            runs["load"].extend([load_before, os.getloadavg()[0]])
            print(f"  {path} {topology} {describe(model)}: does not fit: {runs['error']}", file=sys.stderr, flush=True)
            continue
          runs["lower"].append(lower_s)
          runs["compile"].append(compile_s)
          runs["load"].extend([load_before, os.getloadavg()[0]])
          runs["peak"] = peak
          print(
            f"  {path} {topology} {describe(model)}: lower {lower_s:.0f} s, compile {compile_s:.0f} s",
            file=sys.stderr,
            flush=True,
          )
      old = [statistics.median(r["compile"]) for v, _, r in rows if v == "old" and not r.get("error")]
      for variant, model, runs in rows:
        if runs.get("error"):
          print(
            f"| {path} | {topology} | {variant} | {describe(model)} | - | does not fit | - | {runs['error']} | "
            f"{min(runs['load']):.1f}-{max(runs['load']):.1f} |",
            flush=True,
          )
          continue
        peak, compile_s = runs["peak"], statistics.median(runs["compile"])
        share = f" ({100 * peak / (hbm * 2**30):.0f}% of {hbm} GiB)" if have_libtpu else ""
        ratio = f"{old[0] / compile_s:.2f}x" if old else "-"
        spread = f" ({min(runs['compile']):.0f}-{max(runs['compile']):.0f})" if len(runs["compile"]) > 1 else ""
        print(
          f"| {path} | {topology} | {variant} | {describe(model)} | {statistics.median(runs['lower']):.0f} s | "
          f"{compile_s:.0f} s{spread} | {ratio} | {peak / 2**30:.2f} GiB{share} | "
          f"{min(runs['load']):.1f}-{max(runs['load']):.1f} |",
          flush=True,
        )
  return 0


if __name__ == "__main__":
  sys.exit(main())
