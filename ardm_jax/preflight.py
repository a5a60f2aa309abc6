"""`ardm preflight`: the check to run before renting accelerators for a config.

    ardm preflight --config experiments/cifar10.py --devices 16
    ardm preflight --config experiments/text8.py --topology v5e-16

`--devices N` runs the whole life of a run on N fake CPU devices with the config's own mesh, sharding rules and
batch sizes, the network shrunk to seconds (`configs.shrink_network`) and random items of the data set's shape and
classes (`data.name='random'`; the real data is never read or downloaded):
  1. the real-size layout: the parameters split over the mesh, every batch size of the config checked;
  2. training: 2 steps, a checkpoint after each (rotation), a held-out evaluation after each, the final test
     evaluation (`train.train_and_evaluate`, the trainer users run);
  3. in a second process on another number of devices (a restore onto another mesh, batches that do not divide
     it): `ardm eval` (latest and best checkpoint), `ardm policy` (held-out L_t and the DP), `ardm sample` and
     `ardm inpaint` with the budget's policy, `ardm compress` and `ardm decompress` of one item, compared byte
     for byte with the input. These are the real commands, called as a user would.
Each stage prints its time; the first failure stops the check with one line (a traceback, if any, goes to
preflight.log in the work folder).

`--topology SLICE` (needs libtpu: `pip install "jax[tpu]"`) compiles the real-size train step and evaluation step
ahead of time for the named TPU slice on this machine and prints per-device memory, FLOPs per step, a roofline
step time from the chip's peak and what the whole run (`train.num_steps`, periodic evaluations included) would
take at that speed.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
import traceback

import numpy as np

# Budget of the policies preflight builds and uses, per upscale stage: small enough for CPU, more than one call.
CALLS_PER_STAGE = 4
# Draws per L_t step in the preflight's `ardm policy` (the job itself defaults to many more).
LT_SAMPLES = 2
# Above this many L_t steps (S * D) the preflight estimates every `stride`-th step only (`ardm policy --stride`).
MAX_LT_STEPS = 4096
# The coder gets [positions per call, W] parameters per network call (W: table width, or 3 x mixtures for a
# mixture coded by splits): the preflight's compression budget keeps them under this many entries.
MAX_TABLE_ENTRIES = 1 << 26


class PreflightError(Exception):
  """A stage failed; the message is the one line to show."""


def add_parser(sub) -> None:
  p = sub.add_parser(
    "preflight",
    help="check a config before renting hardware: the whole run on N fake CPU "
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


def _with_cpu_device_count(xla_flags: str, count: int) -> str:
  """XLA_FLAGS with `count` fake CPU devices (any earlier device count replaced, other flags kept)."""
  flags = [f for f in xla_flags.split() if "xla_force_host_platform_device_count" not in f]
  return " ".join(flags + [f"--xla_force_host_platform_device_count={count}"])


def _set_cpu_devices(count: int) -> None:
  """Fake CPU devices exist only if XLA_FLAGS says so before JAX starts."""
  if "jax" in sys.modules:
    import jax  # pylint: disable=import-outside-toplevel

    if jax.device_count() != count or jax.devices()[0].platform != "cpu":
      raise ValueError(
        f"this process already started JAX with {jax.device_count()} {jax.devices()[0].platform} "
        f"device(s); run `ardm preflight --devices {count}` in a fresh process"
      )
    return
  os.environ["XLA_FLAGS"] = _with_cpu_device_count(os.environ.get("XLA_FLAGS", ""), count)
  os.environ["JAX_PLATFORMS"] = "cpu"


def _load_config(config_path: str, overrides):
  from ardm_jax import configs  # pylint: disable=import-outside-toplevel

  return configs.apply_overrides(configs.load_config_file(config_path), overrides)


def _data_spec(config):
  from ardm_jax.train_state import spec_without_data  # pylint: disable=import-outside-toplevel

  spec = spec_without_data(config)
  if spec is None:  # local files (digits, text files, npz): cheap to read for their shape
    from ardm_jax import data  # pylint: disable=import-outside-toplevel
    from ardm_jax.train_state import DataSpec  # pylint: disable=import-outside-toplevel

    spec = DataSpec.of_dataset(data.load(config.data))
  return spec


def _jobs_device_count(num_devices: int, mesh_cfg, requested: int | None) -> int:
  """Another device count the config's mesh accepts (3 when it can: it divides few batch sizes)."""
  from ardm_jax import sharding  # pylint: disable=import-outside-toplevel

  candidates = [requested] if requested else [3, 1, 2, max(1, num_devices // 2)]
  for count in candidates:
    try:
      sharding.resolve_mesh_shape(mesh_cfg, count)
    except ValueError as err:
      if requested:
        raise ValueError(f"--jobs-devices {requested}: {err}") from None
      continue
    if count != num_devices or requested:
      return count
  return num_devices  # a mesh fixed to one size: the restore then uses the same count


def small_run_config(config, spec, workdir_items: int | None = None):
  """The config as preflight trains it: the network shrunk, random items of the data's shape, 2 steps with a
  checkpoint and a held-out evaluation after each; mesh, sharding rules, batch sizes, dtype and remat unchanged."""
  import ml_collections  # pylint: disable=import-outside-toplevel

  from ardm_jax import configs  # pylint: disable=import-outside-toplevel
  from ardm_jax.data.synthetic import random_config  # pylint: disable=import-outside-toplevel

  small = ml_collections.ConfigDict(config.to_dict())
  configs.shrink_network(small)
  tc = small.train
  # One full evaluation batch plus one item, so the last batch is padded.
  eval_items = workdir_items or int(tc.eval_batch_size) + 1
  small.data = ml_collections.ConfigDict(
    random_config(spec, train_items=64, eval_items=eval_items, augment=config.data.get("augment", "none"))
  )
  tc.update(
    num_steps=2,
    checkpoint_every=1,
    log_every=1,
    eval_every=1,
    eval_passes=1,
    eval_items=min(int(tc.eval_items), eval_items),
  )
  small.lock()
  return small


class _Stages:
  """Runs named stages, prints each with its time, turns any failure into one line (traceback to the log)."""

  def __init__(self, log_path: str):
    self.log_path = log_path
    self.rows = []

  @contextlib.contextmanager
  def stage(self, name: str):
    start = time.time()
    print(f"[preflight] {name} ...", flush=True)
    try:
      yield
    except PreflightError as err:
      raise PreflightError(f"{name}: {err}") from None
    except (ValueError, FileExistsError, FileNotFoundError, FloatingPointError) as err:
      raise PreflightError(f"{name}: {err}") from None
    except Exception as err:  # pylint: disable=broad-except
      with open(self.log_path, "a", encoding="utf-8") as f:
        f.write(f"--- {name}\n{traceback.format_exc()}\n")
      raise PreflightError(f"{name}: {type(err).__name__}: {err} (traceback in {self.log_path})") from None
    seconds = time.time() - start
    self.rows.append((name, seconds))
    print(f"[preflight] ok  {name} ({seconds:.1f}s)", flush=True)


def run_devices(config_path: str, overrides, num_devices: int, jobs_devices: int | None, workdir: str | None) -> int:
  """`--devices N`: see the module docstring. Returns the exit code."""
  if num_devices < 1:
    raise ValueError(f"--devices must be >= 1, got {num_devices}")
  _set_cpu_devices(num_devices)
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  config = _load_config(config_path, overrides)
  temporary = workdir is None
  root = tempfile.mkdtemp(prefix="ardm_preflight_") if temporary else os.path.abspath(workdir)
  if not temporary and os.path.exists(os.path.join(root, "run")):
    raise FileExistsError(f"{root}/run exists; pass an empty --workdir (preflight never reuses a run)")
  os.makedirs(root, exist_ok=True)
  stages = _Stages(os.path.join(root, "preflight.log"))
  start = time.time()
  try:
    _run_devices(config, config_path, num_devices, jobs_devices, root, stages)
  except PreflightError as err:
    print(f"preflight FAILED for {config_path} on {num_devices} devices: {err}", file=sys.stderr, flush=True)
    if temporary and not os.path.exists(stages.log_path):
      shutil.rmtree(root, ignore_errors=True)
    return 2
  print(
    f"preflight PASSED for {config_path} on {num_devices} devices in {time.time() - start:.0f}s"
    + ("" if temporary else f"; run kept in {root}"),
    flush=True,
  )
  if temporary:
    shutil.rmtree(root, ignore_errors=True)
  return 0


def _run_devices(config, config_path, num_devices, jobs_devices, root, stages) -> None:
  import jax  # pylint: disable=import-outside-toplevel

  from ardm_jax import objective, sharding, train  # pylint: disable=import-outside-toplevel
  from ardm_jax.train_state import build_setup, count_params  # pylint: disable=import-outside-toplevel

  with stages.stage(f"layout of the real-size model on {num_devices} devices"):
    spec = _data_spec(config)
    setup = build_setup(config, spec, jax.devices())
    for line in sharding.check_config_batches(config, setup.mesh):
      print(f"  {line}", flush=True)
    sharding.check_param_shardings(setup.abstract_state.params, setup.state_shardings.params, setup.mesh)
    print(
      f"  {count_params(setup.abstract_state.params):,} parameters; "
      f"{sharding.describe_layout(setup.mesh, setup.abstract_state, setup.state_shardings)}",
      flush=True,
    )
    model = setup.objective
    num_stages = getattr(model, "num_stages", 1)
    del setup

  small = small_run_config(config, spec)
  run_dir = os.path.join(root, "run")
  with stages.stage(f"train 2 steps with checkpoints and held-out evaluations on {num_devices} devices"):
    result = train.train_and_evaluate(small, run_dir)
    if result.get("preempted") or result["step"] != 2:
      raise PreflightError(f"training stopped at step {result['step']} instead of 2")
    if "test" in result and not np.isfinite(result["test"]["bpd"]):
      raise PreflightError("the final test evaluation is not finite")

  count = _jobs_device_count(num_devices, config.mesh, jobs_devices)
  budget = CALLS_PER_STAGE * num_stages
  with stages.stage(f"restore on {count} device(s): eval, policy, sample, inpaint, compress, decompress"):
    env = dict(os.environ)
    env["XLA_FLAGS"] = _with_cpu_device_count(env.get("XLA_FLAGS", ""), count)
    env["JAX_PLATFORMS"] = "cpu"
    args = [
      sys.executable,
      "-c",
      "import sys; from ardm_jax import preflight; sys.exit(preflight.jobs_main())",
      run_dir,
      str(budget),
      "1" if objective.is_baseline(model) else "0",
      stages.log_path,
    ]
    proc = subprocess.run(args, env=env, capture_output=True, text=True, check=False)
    sys.stdout.write(proc.stdout)
    if proc.returncode:
      lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
      with open(stages.log_path, "a", encoding="utf-8") as f:
        f.write(f"--- jobs process (exit {proc.returncode})\n{proc.stderr}\n")
      raise PreflightError(lines[-1] if lines else f"the jobs process exited with {proc.returncode}")


def _cli(argv: list[str]) -> str:
  """Runs one `ardm` command in this process; returns what it printed, or raises its one-line error."""
  from ardm_jax import cli  # pylint: disable=import-outside-toplevel

  out, err = io.StringIO(), io.StringIO()
  try:
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
      cli.main(argv)
  except SystemExit as exc:
    if exc.code:
      message = err.getvalue().strip().splitlines()
      raise PreflightError(message[-1] if message else f"ardm {argv[0]} exited with {exc.code}") from None
  text = out.getvalue()
  last = [line for line in text.splitlines() if line.strip()]
  print(f"  ardm {' '.join(argv[:1])}: {last[-1] if last else '(no output)'}", flush=True)
  return text


def _write_item(spec, item: np.ndarray, path_stem: str) -> str:
  """One item as the file a user would compress: .npy image, .txt text, .wav audio."""
  if spec.kind == "image":
    path = path_stem + ".npy"
    np.save(path, item.astype(np.uint8 if spec.num_classes <= 256 else np.uint16))
  elif spec.kind == "text":
    path = path_stem + ".txt"
    with open(path, "w", encoding="utf-8") as f:
      f.write("".join(spec.alphabet[i] for i in item))
  else:
    from ardm_jax.data.audio import write_wav  # pylint: disable=import-outside-toplevel

    path = path_stem + ".wav"
    write_wav(path, item, spec.sample_rate, spec.bits)  # classes in, 16-bit PCM out
  return path


def jobs_main(argv=None) -> int:
  """The second process of `--devices`: every job a user runs on a trained workdir, on this process's devices."""
  run_dir, budget, is_baseline, log_path = sys.argv[1:] if argv is None else argv
  budget, is_baseline = int(budget), is_baseline == "1"
  stages = _Stages(log_path)
  try:
    _jobs(run_dir, budget, is_baseline, stages)
  except PreflightError as err:
    print(err, file=sys.stderr, flush=True)
    return 2
  return 0


def _jobs(run_dir: str, budget: int, is_baseline: bool, stages: _Stages) -> None:
  import jax  # pylint: disable=import-outside-toplevel

  from ardm_jax import coding_model, data, sample, workdir  # pylint: disable=import-outside-toplevel

  out = os.path.join(run_dir, "preflight_jobs")
  os.makedirs(out, exist_ok=True)
  devices = f"{jax.device_count()} device(s)"
  with stages.stage(f"ardm eval (latest and best checkpoint) on {devices}"):
    _cli(["eval", "--workdir", run_dir])
    _cli(["eval", "--workdir", run_dir, "--step", "best"])
  if is_baseline:
    with stages.stage(f"ardm sample on {devices} (baseline: no policy, completion or coding)"):
      _cli(["sample", "--workdir", run_dir, "--num", "2", "--out", os.path.join(out, "samples")])
    return
  model = workdir.open_workdir(run_dir)
  spec = model.spec
  num_steps = model.setup.objective.num_net_steps(spec.num_steps)
  stride = max(1, -(-num_steps // MAX_LT_STEPS))
  width = coding_model.symbols_for(model.setup.objective).width
  coding_budget = min(num_steps, max(budget, -(-num_steps * width // MAX_TABLE_ENTRIES)))
  budgets = sorted({budget, coding_budget})
  with stages.stage(f"ardm policy (held-out L_t over {num_steps} steps, stride {stride}) on {devices}"):
    _cli(
      [
        "policy",
        "--workdir",
        run_dir,
        "--budgets",
        ",".join(map(str, budgets)),
        "--samples",
        str(LT_SAMPLES),
        "--stride",
        str(stride),
      ]
    )
  with stages.stage(f"ardm sample with budget {budget} on {devices}"):
    _cli(
      [
        "sample",
        "--workdir",
        run_dir,
        "--num",
        "2",
        "--budget",
        str(budget),
        "--out",
        os.path.join(out, "samples" + {"image": ".png", "text": ".txt", "audio": ""}[spec.kind]),
      ]
    )
  item = data.load(model.config.data).eval_items("test")[0]
  with stages.stage(f"completion with budget {budget} on {devices}"):
    if spec.kind == "audio":  # `ardm inpaint` reads images and text; audio completes through the library
      observed = np.zeros(spec.shape, bool)
      observed[: spec.shape[0] // 2] = True
      with model.setup.context():
        completed = sample.complete(model, item, observed, 2, budget, False, None, 0)
      if not np.array_equal(completed[:, observed], np.broadcast_to(item[observed], (2, int(observed.sum())))):
        raise PreflightError("a completion changed a given value")
    else:
      path = _write_item(spec, item, os.path.join(out, "inpaint_input"))
      if spec.kind == "text":
        with open(path, "r+", encoding="utf-8") as f:
          text = f.read()
          f.seek(0)
          f.write(text[: len(text) // 2] + sample.UNKNOWN_CHAR * (len(text) - len(text) // 2))
      _cli(["inpaint", "--workdir", run_dir, "--input", path, "--num", "2", "--budget", str(budget)])
  # The coder runs its network on one device whatever the count (coding_model.coding_devices).
  with stages.stage(f"ardm compress and decompress one item with budget {coding_budget} on 1 device"):
    path = _write_item(spec, item, os.path.join(out, "item"))
    container = os.path.join(out, "item.ardm")
    _cli(["compress", "--workdir", run_dir, path, "-o", container, "--budget", str(coding_budget)])
    restored = os.path.join(out, "restored")
    _cli(["decompress", "--workdir", run_dir, container, "-o", restored])
    name = os.listdir(restored)
    if len(name) != 1:
      raise PreflightError(f"decompression wrote {len(name)} files instead of 1")
    with open(path, "rb") as a, open(os.path.join(restored, name[0]), "rb") as b:
      if a.read() != b.read():
        raise PreflightError("the decompressed file differs from the input")


# ---------------------------------------------------------------------------------------------------------------
# --topology: ahead-of-time compiles for a TPU slice

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
# Per JAX device (one chip): dense bf16 peak FLOP/s and HBM bytes/s from the Cloud TPU spec sheets.
CHIP_PEAKS = {"v4": (275e12, 1.2e12), "v5e": (197e12, 8.2e11), "v5p": (459e12, 2.76e12), "v6e": (918e12, 1.64e12)}


def num_topology_devices(topology: str) -> int:
  return math.prod(int(n) for n in TOPOLOGIES[topology][0].split(":")[1].split("x"))


def tpu_devices(topology: str):
  from jax.experimental import topologies  # pylint: disable=import-outside-toplevel

  name, chip_config, host_bounds, _ = TOPOLOGIES[topology]
  desc = topologies.get_topology_desc(
    name,
    "tpu",
    chip_config_name=chip_config,
    chips_per_host_bounds=host_bounds,
    num_slices=1,
    wrap=(False, False, False),
  )
  return list(desc.devices)


def on_devices(setup, devices):
  """The same setup with its mesh and shardings moved onto `devices` (same count, same mesh shape)."""
  import dataclasses  # pylint: disable=import-outside-toplevel

  import jax  # pylint: disable=import-outside-toplevel
  from jax.sharding import Mesh, NamedSharding  # pylint: disable=import-outside-toplevel

  mesh = Mesh(
    np.asarray(devices).reshape(setup.mesh.devices.shape), setup.mesh.axis_names, axis_types=setup.mesh.axis_types
  )
  shardings = jax.tree.map(lambda s: NamedSharding(mesh, s.spec), setup.state_shardings)
  return dataclasses.replace(setup, mesh=mesh, state_shardings=shardings)


def _prepare_compiler(topology: str, cpu_estimate: bool) -> bool:
  """Environment for compiling TPU programs on a machine without TPUs; returns whether libtpu is present."""
  import importlib.util  # pylint: disable=import-outside-toplevel

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
  os.environ["XLA_FLAGS"] = _with_cpu_device_count(os.environ.get("XLA_FLAGS", ""), num_topology_devices(topology))
  return have_libtpu


def _mib(n: float) -> str:
  return f"{n / 2**20:,.1f} MiB"


def _cost(compiled) -> tuple[float, float]:
  """(FLOPs, bytes accessed) of one device's program, from XLA's cost analysis."""
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else {}
  cost = cost or {}
  return float(cost.get("flops", 0.0)), float(cost.get("bytes accessed", 0.0))


def _peak_memory(compiled) -> tuple[dict, int]:
  mem = compiled.memory_analysis()
  rows = {
    "arguments": mem.argument_size_in_bytes,
    "outputs": mem.output_size_in_bytes,
    "aliased (donated)": mem.alias_size_in_bytes,
    "temporaries": mem.temp_size_in_bytes,
    "generated code": mem.generated_code_size_in_bytes,
  }
  peak = rows["arguments"] + rows["outputs"] - rows["aliased (donated)"] + rows["temporaries"]
  return rows, peak


def compile_for_topology(config, topology: str, have_libtpu: bool) -> dict:
  """Compiles the train step and the evaluation step of `config` for the slice; returns the report's numbers."""
  import jax  # pylint: disable=import-outside-toplevel

  from ardm_jax import checkpoint, evaluate, sharding, train  # pylint: disable=import-outside-toplevel
  from ardm_jax.train_state import build_setup, count_params  # pylint: disable=import-outside-toplevel

  spec = _data_spec(config)
  setup = build_setup(config, spec, jax.devices())
  sharding.check_config_batches(config, setup.mesh)
  sharding.check_param_shardings(setup.abstract_state.params, setup.state_shardings.params, setup.mesh)
  if have_libtpu:
    devices = tpu_devices(topology)
    setup = on_devices(setup, devices)
    target = f"{topology} ({TOPOLOGIES[topology][0]}, {len(devices)} x {devices[0].device_kind})"
  else:
    target = f"CPU ESTIMATE for {topology}: {jax.device_count()} fake CPU devices, XLA:CPU buffer assignment"
  state = checkpoint.abstract_with_shardings(setup.abstract_state, setup.state_shardings)
  key_shape = jax.eval_shape(lambda: jax.random.PRNGKey(0))
  key = jax.ShapeDtypeStruct(key_shape.shape, key_shape.dtype, sharding=sharding.replicated(setup.mesh))
  train_batch = int(config.train.batch_size)
  eval_batch = sharding.padded_batch_size(int(config.train.eval_batch_size), setup.mesh)

  def batch(size):
    return jax.ShapeDtypeStruct((size,) + spec.shape, np.int32, sharding=sharding.batch_sharding(setup.mesh))

  report = {"target": target, "params": count_params(setup.abstract_state.params), "setup": setup}
  with setup.context():
    start = time.time()
    compiled = train.compile_train_step(setup).lower(state, batch(train_batch), key).compile()
    report["train"] = (compiled, time.time() - start)
    start = time.time()
    eval_fn = evaluate.make_eval_fn(setup)
    compiled = jax.jit(eval_fn).lower(state.ema_params, batch(eval_batch), key).compile()
    report["eval"] = (compiled, time.time() - start)
  report["eval_batch"] = eval_batch
  return report


def run_topology(config_path: str, overrides, topology: str, cpu_estimate: bool = False) -> int:
  have_libtpu = _prepare_compiler(topology, cpu_estimate)
  config = _load_config(config_path, overrides)
  from ardm_jax import sharding  # pylint: disable=import-outside-toplevel

  report = compile_for_topology(config, topology, have_libtpu)
  setup = report["setup"]
  n = setup.mesh.devices.size
  hbm = TOPOLOGIES[topology][3] * 2**30
  peak_flops, hbm_bw = CHIP_PEAKS[topology.split("-")[0]]
  tc = config.train
  print(
    f"{config_path}: {report['params']:,} parameters, {config.model.name}, dtype "
    f"{config.model.get('dtype', 'float32')}, remat {config.model.get('remat', False)}; {report['target']}"
  )
  print(sharding.describe_layout(setup.mesh, setup.abstract_state, setup.state_shardings))
  # The FLOPs the devices execute (remat recompute included): what the roofline time needs. Model FLOPs for MFU,
  # without recompute, are benchmarks/throughput.py's.
  print(
    "| program | compile | peak memory per device | executed FLOPs per step (all devices) | bytes per device | "
    "compute time | memory time | roofline step time |"
  )
  print("|---|---|---|---|---|---|---|---|")
  times = {}
  for name, label in (
    ("train", f"train step, batch {int(tc.batch_size)}"),
    ("eval", f"eval step, batch {report['eval_batch']}"),
  ):
    compiled, seconds = report[name]
    rows, peak = _peak_memory(compiled)
    flops, nbytes = _cost(compiled)
    compute, memory = flops / peak_flops, nbytes / hbm_bw
    times[name] = max(compute, memory)
    fit = "" if not have_libtpu else f" ({100 * peak / hbm:.0f}% of {TOPOLOGIES[topology][3]} GiB)"
    print(
      f"| {label} | {seconds:.0f}s | {_mib(peak)}{fit} | {flops * n:.3e} | {_mib(nbytes)} | "
      f"{1e3 * compute:.1f} ms | {1e3 * memory:.1f} ms | {1e3 * times[name]:.1f} ms |"
    )
  steps = int(tc.num_steps)
  eval_every = int(tc.get("eval_every", 0))
  evals = steps // eval_every if eval_every else 0
  eval_batches = -(-int(tc.get("eval_items", 0)) // report["eval_batch"]) if evals else 0
  total = steps * times["train"] + evals * eval_batches * times["eval"]
  print(
    f"whole run at roofline speed: {steps:,} steps x {1e3 * times['train']:.1f} ms"
    + (f" + {evals:,} held-out evaluations x {eval_batches} batches x {1e3 * times['eval']:.1f} ms" if evals else "")
    + f" = {total / 3600:.1f} h ({total / 86400:.1f} days)"
  )
  print(
    "(per device: compute = FLOPs / bf16 peak, memory = XLA's bytes accessed / HBM bandwidth, roofline = the "
    "larger; bytes accessed counts every fused op's operands and outputs, some of which stay on chip, so the "
    "memory time can overstate; float32 matmuls run below the bf16 peak"
    + ("" if have_libtpu else "; CPU ESTIMATE, not TPU numbers")
    + ")"
  )
  return 0


def cmd_preflight(args, overrides) -> int:
  if args.topology:
    return run_topology(args.config, overrides, args.topology)
  return run_devices(args.config, overrides, args.devices, args.jobs_devices, args.workdir)
