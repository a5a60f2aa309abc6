"""What a run measures about itself, without training: the peak table, the progress line's throughput and MFU, the
goodput stopwatch and the device-memory line."""

import pytest

from ardm_jax import device_peaks


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
