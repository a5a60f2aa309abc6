"""Multi-host: the distributed start-up rules, per-host data slices, and a real 2-process run on 127.0.0.1.

The 2-process run goes through the `ardm train` command with --coordinator_address/--num_processes/--process_id
and must reproduce, step for step, a single process on a mesh of the same shape (2 fake CPU devices).
"""

import glob
import os
import re
import socket
import subprocess
import sys

import jax
import ml_collections
import numpy as np
import pytest

from ardm_jax import cli, data, distributed

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DIGITS_TINY = os.path.join(REPO, "experiments", "digits.py:tiny")
TEXT_TINY = os.path.join(REPO, "experiments", "local_text.py:tiny")
SLURM_STEP = {
  "SLURM_JOB_ID": "77",
  "SLURM_STEP_NODELIST": "node[1-2]",
  "SLURM_NTASKS": "16",
  "SLURM_PROCID": "3",
  "SLURM_LOCALID": "3",
}


# ---- when to start jax.distributed ------------------------------------------------------------------------------


def test_no_flags_and_no_cluster_means_single_process():
  decided = distributed.plan(environ={}, on_cloud_tpu=False)
  assert decided.mode == "single" and not decided.initializes


def test_explicit_flags_win_over_detection():
  decided = distributed.plan("10.0.0.1:1234", 4, 2, environ=SLURM_STEP, on_cloud_tpu=True)
  assert (decided.mode, decided.coordinator_address, decided.num_processes, decided.process_id) == (
    "explicit",
    "10.0.0.1:1234",
    4,
    2,
  )


@pytest.mark.parametrize(
  "flags, missing",
  [
    (("h:1", None, None), "--num_processes, --process_id"),
    ((None, 2, None), "--coordinator_address, --process_id"),
    ((None, None, 0), "--coordinator_address, --num_processes"),
    (("h:1", 2, None), "--process_id"),
  ],
)
def test_partial_flags_are_an_error_naming_what_is_missing(flags, missing):
  with pytest.raises(ValueError, match=f"^{re.escape(missing)} missing"):
    distributed.plan(*flags, environ={}, on_cloud_tpu=False)


@pytest.mark.parametrize(
  "flags, match",
  [
    (("10.0.0.1", 2, 0), "HOST:PORT"),
    (("10.0.0.1:99999", 2, 0), "HOST:PORT"),
    (("10.0.0.1:1234", 2, 2), r"0\.\.1"),
    (("10.0.0.1:1234", 0, 0), "at least 1"),
    ((None, 1, 1), "out of range"),
  ],
)
def test_bad_flags_are_clear_errors(flags, match):
  with pytest.raises(ValueError, match=match):
    distributed.plan(*flags, environ={}, on_cloud_tpu=False)


def test_num_processes_one_forces_a_single_process_inside_a_cluster():
  assert distributed.plan(None, 1, None, environ=SLURM_STEP, on_cloud_tpu=True).mode == "single"
  assert distributed.plan("h:1", 1, 0, environ={}, on_cloud_tpu=False).mode == "single"


def test_slurm_is_detected_only_inside_a_multi_task_job_step():
  assert distributed.plan(environ=SLURM_STEP, on_cloud_tpu=False).mode == "slurm"
  assert distributed.plan(environ=SLURM_STEP | {"SLURM_NTASKS": "1"}, on_cloud_tpu=False).mode == "single"
  no_srun = {k: v for k, v in SLURM_STEP.items() if k != "SLURM_STEP_NODELIST"}  # the bare sbatch script
  assert distributed.plan(environ=no_srun, on_cloud_tpu=False).mode == "single"


def test_cloud_tpu_vm_is_detected():
  assert distributed.plan(environ={}, on_cloud_tpu=True).mode == "cloud_tpu"


def test_initialize_without_flags_starts_nothing(monkeypatch):
  for var in SLURM_STEP:
    monkeypatch.delenv(var, raising=False)
  monkeypatch.setattr(distributed, "_on_cloud_tpu_vm", lambda: False)
  assert distributed.initialize().mode == "single"
  assert not jax.distributed.is_initialized()


def test_cli_rejects_partial_flags_before_touching_devices(tmp_path, capsys):
  with pytest.raises(SystemExit) as exit_info:
    cli.main(["train", "--config", DIGITS_TINY, "--workdir", str(tmp_path / "w"), "--num_processes", "2"])
  assert exit_info.value.code == 2
  assert "--coordinator_address, --process_id missing" in capsys.readouterr().err
  assert not (tmp_path / "w").exists()


# ---- each host reads its own slice ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits():
  return data.load(ml_collections.ConfigDict({"name": "digits"}))


@pytest.mark.parametrize("process_count", [2, 3, 4])
def test_host_slices_are_disjoint_and_cover_the_training_split(digits, process_count):
  """Concatenated per-host slices are the global batch; the first N global examples visit every item once."""
  n, seed, gbs = digits.num_train_items, 5, 12 * process_count
  num_steps = -(-n // gbs)
  seen = []
  for step in range(num_steps):
    parts = [digits.train_indices(step, gbs, seed, pi, process_count) for pi in range(process_count)]
    assert all(len(p) == gbs // process_count for p in parts)
    np.testing.assert_array_equal(np.concatenate(parts), digits.train_indices(step, gbs, seed))
    rows = [digits.train_batch(step, gbs, seed, pi, process_count) for pi in range(process_count)]
    np.testing.assert_array_equal(np.concatenate(rows), digits.train_batch(step, gbs, seed))
    seen.append(np.concatenate(parts))
  first_epoch = np.concatenate(seen)[:n]
  np.testing.assert_array_equal(np.sort(first_epoch), np.arange(n))


def test_text_crops_split_the_global_batch_between_hosts():
  ds = data.load(ml_collections.ConfigDict({"name": "pydoc_text", "seq_len": 16}))
  for step in (0, 7, 1000):
    whole = ds.train_batch(step, 8, 3)
    parts = [ds.train_batch(step, 8, 3, pi, 4) for pi in range(4)]
    np.testing.assert_array_equal(np.concatenate(parts), whole)


# ---- two real processes --------------------------------------------------------------------------------------


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _train_cmd(workdir, *extra):
  # `timeout` kills a process whose peer died: jax.distributed would otherwise wait minutes before aborting.
  # The embedded prose's 587 test crops leave the last eval batch of 100 padded, so the masking is exercised.
  return [
    "timeout",
    "-s",
    "KILL",
    "240",
    sys.executable,
    "-m",
    "ardm_jax.cli",
    "train",
    "--config",
    TEXT_TINY,
    "--workdir",
    str(workdir),
    "--config.data.name=pydoc_text",
    "--config.train.num_steps=3",
    "--config.train.eval_passes=1",
    "--config.train.eval_batch_size=100",
    *extra,
  ]


def _env(num_devices: int) -> dict:
  env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_NUM_CPU_DEVICES")}
  env |= {
    "JAX_PLATFORMS": "cpu",
    "PYTHONUNBUFFERED": "1",
    "TF_CPP_MIN_LOG_LEVEL": "3",
    "XLA_FLAGS": f"--xla_force_host_platform_device_count={num_devices}",
  }
  return env


def _params(workdir):
  from ardm_jax import workdir as wd

  model = wd.open_workdir(str(workdir), use_ema=False)
  return jax.tree_util.tree_flatten_with_path(jax.device_get(model.params))[0], model.step


def _progress(log: str) -> list[str]:
  """The step and test lines, without the rate, ETA or first step's time (which depend on timing)."""
  lines = [
    re.sub(r"\s+([\d.]+ steps/s|compile \+ first step).*", "", line)
    for line in log.splitlines()
    if line.startswith(("step ", "test "))
  ]
  return lines


def test_two_processes_match_one_process_on_the_same_mesh(tmp_path):
  port = _free_port()
  procs = [
    subprocess.Popen(
      _train_cmd(
        tmp_path / "multi", "--coordinator_address", f"127.0.0.1:{port}", "--num_processes", "2", "--process_id", str(i)
      ),
      cwd=REPO,
      env=_env(1),
      stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT,
      text=True,
    )
    for i in range(2)
  ]
  procs.append(
    subprocess.Popen(
      _train_cmd(tmp_path / "single"),
      cwd=REPO,
      env=_env(2),
      stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT,
      text=True,
    )
  )
  logs = []
  try:
    for proc in procs:
      logs.append(proc.communicate(timeout=270)[0])
  finally:
    for proc in procs:
      if proc.poll() is None:
        proc.kill()
  report = "\n".join(
    f"--- {name} (exit {p.returncode}) ---\n{log[-3000:]}"
    for name, p, log in zip(("process 0", "process 1", "single"), procs, logs)
  )
  assert all(p.returncode == 0 for p in procs), report
  multi0, multi1, single = logs
  assert "over 2 cpu devices in 2 process(es)" in multi0 and "over 2 cpu devices in 1 process(es)" in single, report
  # Same losses, gradient norms and held-out bits/dim, printed only by process 0.
  assert _progress(multi0) == _progress(single) and len(_progress(single)) == 4, report
  assert _progress(multi1) == [], report
  assert len(glob.glob(str(tmp_path / "multi" / "events.out.tfevents.*"))) == 1  # metrics: process 0 only

  # The orbax checkpoint written jointly by both processes restores onto this one device.
  multi_params, multi_step = _params(tmp_path / "multi")
  single_params, single_step = _params(tmp_path / "single")
  assert multi_step == single_step == 3
  for (path, a), (_, b) in zip(multi_params, single_params):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7, err_msg=jax.tree_util.keystr(path))


# ---- launch scripts --------------------------------------------------------------------------------------------

LAUNCH = os.path.join(REPO, "launch")
SCRIPTS = sorted(glob.glob(os.path.join(LAUNCH, "*", "*.sh")) + glob.glob(os.path.join(LAUNCH, "*", "*.sbatch")))
TPU_VARS = {
  "PROJECT": "p",
  "ZONE": "us-central2-b",
  "TPU_NAME": "ardm-test",
  "ACCELERATOR_TYPE": "v4-32",
  "RUNTIME_VERSION": "tpu-ubuntu2204-base",
  "RUN_NAME": "r1",
}


def _bash(script, env_extra, *args):
  env = {k: v for k, v in os.environ.items() if k not in TPU_VARS and k not in ("DRY_RUN", "QUEUED", "SPOT")}
  return subprocess.run(["bash", script, *args], env=env | env_extra, capture_output=True, text=True, timeout=60)


def test_launch_scripts_parse():
  assert len(SCRIPTS) >= 9
  for script in SCRIPTS:
    proc = subprocess.run(["bash", "-n", script], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, (script, proc.stderr)


@pytest.mark.parametrize("name", ["create", "install", "run", "logs", "stop", "delete"])
def test_tpu_scripts_name_missing_variables_and_print_their_commands(name):
  script = os.path.join(LAUNCH, "tpu", f"{name}.sh")
  missing = _bash(script, {}, "ardm", "train")
  assert missing.returncode == 2 and "missing required variable" in missing.stderr and "PROJECT" in missing.stderr
  dry = _bash(script, TPU_VARS | {"DRY_RUN": "1"}, "ardm", "train", "--config", "experiments/cifar10.py")
  assert dry.returncode == 0, dry.stderr
  assert "+ gcloud compute tpus" in dry.stdout and "ardm-test" in dry.stdout


def test_queued_tpu_request_and_manual_gpu_flags():
  queued = _bash(os.path.join(LAUNCH, "tpu", "create.sh"), TPU_VARS | {"DRY_RUN": "1", "QUEUED": "1", "SPOT": "1"})
  assert "queued-resources create ardm-test" in queued.stdout and "--spot" in queued.stdout
  manual = _bash(
    os.path.join(LAUNCH, "gpu", "multinode_manual.sh"),
    {"DRY_RUN": "1", "COORDINATOR_ADDRESS": "10.0.0.1:1234", "NUM_PROCESSES": "2", "PROCESS_ID": "1"},
    "--config",
    "c.py",
    "--workdir",
    "w",
  )
  assert manual.returncode == 0, manual.stderr
  assert (
    "--coordinator_address 10.0.0.1:1234 --num_processes 2 --process_id 1 --config c.py --workdir w" in manual.stdout
  )


def test_aot_memory_script_reports_per_device_memory():
  """Compiles the tiny Transformer for a 4-device slice: on the TPU compiler if libtpu is installed, else the
  labelled CPU estimate."""
  proc = subprocess.run(
    [
      "timeout",
      "-s",
      "KILL",
      "200",
      sys.executable,
      os.path.join(LAUNCH, "aot_memory.py"),
      "--config",
      TEXT_TINY,
      "--config.data.name=pydoc_text",
      "--topology",
      "v5e-4",
      "--cpu_estimate",
    ],
    cwd=REPO,
    env=_env(1),
    capture_output=True,
    text=True,
    timeout=230,
  )
  assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
  assert "over 4 " in proc.stdout and "| train step, batch 4 |" in proc.stdout, proc.stdout
  assert "| eval step, batch" in proc.stdout and "whole run at roofline speed: 2 steps" in proc.stdout
  assert ("CPU ESTIMATE" in proc.stdout) != ("% of 16 GiB" in proc.stdout)
  # The executed FLOPs beside the independent count (one device, layers unrolled), and the fit verdict's line.
  assert re.search(r"independent count .* the compiled program executes \d+\.\d+x that", proc.stdout), proc.stdout
  assert "\nFIT: " in proc.stdout
