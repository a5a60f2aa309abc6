"""`ardm preflight --devices N`: the whole life of a run on fake CPU devices, before renting accelerators.

    ardm preflight --config experiments/cifar10.py --devices 16

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

The fake device count must be set before JAX starts (`device_env.set_cpu_devices`; jobs/preflight.py does it
before importing this module). `--topology SLICE`, the ahead-of-time compile for a TPU slice, is slice_report.py.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import shutil
import subprocess
import sys
import tempfile
import time
import traceback

import jax
import ml_collections
import numpy as np

from ardm_jax import coding_model, configs, data, objective, sample, sharding, train, workdir
from ardm_jax.data.audio import write_wav
from ardm_jax.data.synthetic import random_config
from ardm_jax.device_env import set_cpu_devices, with_cpu_device_count
from ardm_jax.file_io import UNKNOWN_CHAR
from ardm_jax.jobs import compress as compress_job
from ardm_jax.jobs import decompress as decompress_job
from ardm_jax.jobs import evaluate as eval_job
from ardm_jax.jobs import inpaint as inpaint_job
from ardm_jax.jobs import policy as policy_job
from ardm_jax.jobs import sample as sample_job
from ardm_jax.train_state import build_setup, count_params, data_spec

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


def _jobs_device_count(num_devices: int, mesh_cfg, requested: int | None) -> int:
  """Another device count the config's mesh accepts (3 when it can: it divides few batch sizes)."""
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
  set_cpu_devices(num_devices)
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  config = configs.apply_overrides(configs.load_config_file(config_path), overrides)
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
  with stages.stage(f"layout of the real-size model on {num_devices} devices"):
    spec = data_spec(config)
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
    env["XLA_FLAGS"] = with_cpu_device_count(env.get("XLA_FLAGS", ""), count)
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


# The jobs preflight runs in its second process, as `ardm CMD ...` would (jobs/*.py).
JOBS = {
  "eval": eval_job,
  "policy": policy_job,
  "sample": sample_job,
  "inpaint": inpaint_job,
  "compress": compress_job,
  "decompress": decompress_job,
}


def _cli(argv: list[str]) -> str:
  """Runs one `ardm` command in this process; returns what it printed, or raises its one-line error."""
  job = JOBS[argv[0]]
  parser = argparse.ArgumentParser(prog="ardm")
  job.add_parser(parser.add_subparsers(dest="command", required=True))
  out, err = io.StringIO(), io.StringIO()
  try:
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
      job.run(parser.parse_args(argv))
  except SystemExit as exc:  # argparse: a bad argument
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
          f.write(text[: len(text) // 2] + UNKNOWN_CHAR * (len(text) - len(text) // 2))
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
