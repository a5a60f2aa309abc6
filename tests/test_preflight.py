"""`ardm preflight --devices N`: the whole life of a run on fake CPU devices passes for a good config and stops
with one line naming the key for a bad one. Each call runs in its own process (the device count is fixed before
JAX starts)."""

import json
import math
import os
import subprocess
import sys

from conftest import run

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DIGITS_TINY = os.path.join(REPO, "experiments", "digits.py:tiny")


def preflight(*args, timeout=400):
  env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_PLATFORMS")}
  env["TF_CPP_MIN_LOG_LEVEL"] = "3"
  return subprocess.run(
    [
      "timeout",
      "-s",
      "KILL",
      str(timeout),
      sys.executable,
      "-m",
      "ardm_jax.cli",
      "preflight",
      "--config",
      DIGITS_TINY,
      *args,
    ],
    cwd=REPO,
    env=env,
    capture_output=True,
    text=True,
    timeout=timeout + 30,
  )


def test_preflight_runs_every_job_on_other_meshes_with_batches_that_do_not_divide_them(tmp_path):
  """8 devices train (evaluation batches of 100 padded to 104), 3 devices restore and run every job. The U-Net
  leaves out its attention blocks (nothing in the check depends on them): less to compile in both processes."""
  proc = preflight("--devices", "8", "--workdir", str(tmp_path), "--config.model.attention=False")
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  out = proc.stdout
  assert "evaluation batches of 100 are padded to 104 rows" in out
  assert "mesh (data=8, fsdp=1, tensor=1)" in out and "eval step 2:" in out and "test bits/dim" in out
  for job in ("ardm eval", "ardm policy", "ardm sample", "ardm inpaint", "ardm compress", "ardm decompress"):
    assert f"  {job}: " in out, job
  assert "on 3 device(s)" in out and "preflight PASSED" in out
  assert os.path.isfile(tmp_path / "run" / "policy.json") and list((tmp_path / "run").glob("eval_step*.json"))
  # The padding rows count nowhere: this process's one device evaluates the checkpoint exactly as the 3 devices
  # did (same seed: the same orders and steps per item), and as the 8 devices did at the end of training.
  run("eval", "--workdir", tmp_path / "run", "--out", tmp_path / "eval_1_device.json")
  bpd1 = json.loads((tmp_path / "eval_1_device.json").read_text())["bpd"]
  latest_first = sorted((tmp_path / "run").glob("eval_step*.json"), key=os.path.getmtime)  # then --step best
  bpd3 = json.loads(latest_first[0].read_text())["bpd"]
  assert math.isfinite(bpd1) and abs(bpd3 - bpd1) <= 1e-5 * abs(bpd1), (bpd3, bpd1)
  bpd8 = float(out.split("test bits/dim")[1].split(":")[1].split()[0])
  assert abs(bpd8 - bpd1) <= 1e-3, (bpd8, bpd1)


def test_preflight_stops_on_a_batch_size_the_mesh_cannot_split_with_one_line():
  proc = preflight("--devices", "4", "--config.train.batch_size=6", timeout=120)
  assert proc.returncode == 2, proc.stdout + proc.stderr
  lines = [line for line in proc.stderr.splitlines() if line.startswith("preflight FAILED")]
  assert len(lines) == 1 and "--config.train.batch_size=6 is not divisible by 4" in lines[0], proc.stderr
  assert "Traceback" not in proc.stderr and "[preflight] train" not in proc.stdout
