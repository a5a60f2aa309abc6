"""What a run measures about itself, without training: the peak table, the progress line's throughput and MFU, the
goodput stopwatch and the device-memory line."""

import types

import jax
import pytest

from ardm_jax import device_peaks, goodput, progress


@pytest.mark.parametrize(
  "kind, bf16, fp32",
  [
    ("TPU v4", 275e12, 275e12),
    ("TPU v5 lite", 197e12, 197e12),
    ("TPU v5p", 459e12, 459e12),
    ("TPU v6 lite", 918e12, 918e12),
    ("NVIDIA A100-SXM4-80GB", 312e12, 156e12),
    ("NVIDIA H100 80GB HBM3", 989.5e12, 494.5e12),
    ("NVIDIA H100 PCIe", 756.5e12, 378e12),
    ("NVIDIA H200", 989.5e12, 494.5e12),
  ],
)
def test_peak_table_picks_the_compute_dtypes_column(kind, bf16, fp32):
  assert device_peaks.peak_flops(kind, "bfloat16") == bf16
  assert device_peaks.peak_flops(kind, "float32") == fp32


def test_unknown_devices_have_no_peak():
  for kind in ("cpu", "Tesla V100-SXM2-16GB", "TPU v3"):
    assert device_peaks.device_peak(kind) is None and device_peaks.peak_flops(kind, "bfloat16") is None


def test_progress_lines_first_step_then_every_log_every_or_time(monkeypatch):
  lines, scalars = [], []
  writer = type("Writer", (), {"write_scalars": lambda self, step, values: scalars.append(step)})()
  clock = [100.0]
  monkeypatch.setattr(progress.time, "time", lambda: clock[0])
  log = progress.ProgressLog(
    writer, lambda text, flush: lines.append(text), num_steps=1000, log_every=500, every_s=30.0
  )
  metrics = {"loss": 1.0, "bpd": 1.0, "grad_norm": 1.0}
  clock[0] += 12.0
  log(1, metrics, None)  # compile + first step: printed at once, whatever log_every is
  for step in range(2, 5):
    clock[0] += 1.0
    log(step, metrics, None)
  clock[0] += 30.0
  log(5, metrics, None)  # 31 s since the last line
  assert len(lines) == 2 and scalars == [1, 5]
  assert lines[0].startswith("step 1/1000") and "compile + first step 12.0s" in lines[0]
  assert lines[1].startswith("step 5/1000") and "0.12 steps/s" in lines[1]  # 4 steps in the 33 s after the first
  with pytest.raises(FloatingPointError, match="diverged at step 6"):
    log(6, {"loss": float("nan"), "bpd": 1.0, "grad_norm": 1.0}, None)


def _progress_lines(monkeypatch, peak):
  lines, scalars = [], {}
  writer = types.SimpleNamespace(write_scalars=lambda step, values: scalars.update({step: values}))
  clock, busy = [100.0], [0.0]
  monkeypatch.setattr(progress.time, "time", lambda: clock[0])
  throughput = progress.Throughput(
    batch_size=8, variables=64, unit="dims", flops_per_step=1e12, num_devices=2, peak_flops=peak
  )
  log = progress.ProgressLog(
    writer, lambda text, flush: lines.append(text), 100, 10, throughput=throughput, busy_s=lambda: busy[0]
  )
  metrics = {"loss": 1.0, "bpd": 1.0, "grad_norm": 1.0}
  clock[0] += 5.0
  log(1, metrics, None)
  clock[0], busy[0] = clock[0] + 20.0, busy[0] + 3.0  # 9 steps in 3 s of train steps; an evaluation took the rest
  log(10, metrics, None)
  return lines, scalars


def test_progress_line_has_throughput_and_names_mfu_only_where_the_peak_is_known(monkeypatch):
  """Examples/s, dims/s and TFLOP/s per device come from the train-step time since the last line (3 steps/s here),
  steps/s and the ETA from wall time (0.45 steps/s); MFU is in the line and in TensorBoard only with a peak."""
  lines, scalars = _progress_lines(monkeypatch, peak=None)
  assert "compile + first step 5.0s" in lines[0] and "examples/s" not in lines[0]
  assert "0.45 steps/s" in lines[1]
  assert "24 examples/s  1536 dims/s  1.5 TFLOP/s/device" in lines[1] and "MFU" not in lines[1]
  assert scalars[10]["examples_per_s"] == 24 and scalars[10]["dims_per_s"] == 1536 and "mfu" not in scalars[10]
  assert scalars[10]["tflops_per_device"] == pytest.approx(1.5)
  lines, scalars = _progress_lines(monkeypatch, peak=100e12)
  assert lines[1].endswith("1.5 TFLOP/s/device  MFU 1.5%")
  assert scalars[10]["mfu"] == pytest.approx(0.015)


def test_peak_note_says_once_why_mfu_is_missing():
  assert progress.peak_note("cpu", "float32") == (
    None,
    "MFU not reported: no peak FLOP/s known for device kind 'cpu' (ardm_jax/device_peaks.py)",
  )
  peak, note = progress.peak_note("TPU v4", "bfloat16")
  assert peak == 275e12 and note == "MFU against the TPU v4 bfloat16 peak of 275 TFLOP/s per device"


def test_goodput_parts_sum_to_the_wall_time_and_an_inner_part_pauses_the_outer():
  clock = [10.0]
  stopwatch = goodput.Goodput(clock=lambda: clock[0])
  clock[0] += 1.0  # other
  with stopwatch.part("train"):
    clock[0] += 2.0
    with stopwatch.part("data"):
      clock[0] += 0.5
    assert stopwatch.seconds("train", "data") == 2.5  # the open part counts
    clock[0] += 3.0
  with stopwatch.part("checkpoint"):
    clock[0] += 0.25
  clock[0] += 0.75  # other
  segment = stopwatch.segment(start_step=0, end_step=7)
  assert segment == {
    "wall_s": 7.5,
    "compile_s": 0.0,
    "train_s": 5.0,
    "eval_s": 0.0,
    "checkpoint_s": 0.25,
    "data_s": 0.5,
    "other_s": 1.75,
    "start_step": 0,
    "end_step": 7,
  }
  assert goodput.summary(segment).startswith("goodput: 7.5s wall, 66.7% in train steps (compile 0.0s, train 5.0s")
  assert goodput.scalars(segment)["goodput/train_share"] == pytest.approx(5.0 / 7.5)
  with pytest.raises(ValueError, match="unknown goodput part 'other'"):
    with stopwatch.part("other"):
      pass


def test_memory_line_where_the_backend_reports_it_and_nothing_on_cpu():
  assert progress.memory_report(jax.local_devices(), None) is None  # the CPU's memory_stats() is None
  gib = 2**30
  devices = [
    types.SimpleNamespace(memory_stats=lambda: {"peak_bytes_in_use": 3 * gib, "bytes_limit": 16 * gib}),
    types.SimpleNamespace(memory_stats=lambda: {"peak_bytes_in_use": 5 * gib, "bytes_limit": 16 * gib}),
  ]
  analysis = types.SimpleNamespace(
    argument_size_in_bytes=2 * gib, output_size_in_bytes=2 * gib, temp_size_in_bytes=gib, alias_size_in_bytes=gib
  )
  line, scalars = progress.memory_report(devices, types.SimpleNamespace(memory_analysis=lambda: analysis))
  assert line.startswith("device memory: peak 5.000 GiB in use (max over 2 local devices, of 16.000 GiB)")
  assert "the compiled train step's estimate per device 4.000 GiB" in line
  assert scalars == {"memory/peak_bytes_in_use": 5.0 * gib, "memory/compiled_estimate_bytes": 4.0 * gib}
