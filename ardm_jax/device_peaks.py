"""Peak dense FLOP/s per device by device kind: what MFU divides the achieved FLOP/s by.

A run's compute dtype picks the column. `float32` means float32 as JAX runs it by default: JAX computes float32
matmuls and convolutions at its default precision in reduced precision, bfloat16 passes on TPU and TensorFloat-32 on
Ampere and later NVIDIA GPUs ("By default, JAX leans toward speed: float32 dot products may be computed with
reduced-precision arithmetic internally (bfloat16 on TPU, TF32 on recent GPUs)", https://docs.jax.dev/en/latest/
201/precision.html). So a TPU's float32 peak is its bfloat16 peak, and a GPU's is its dense TF32 tensor-core peak.
NVIDIA's datasheets print tensor-core figures with 2:4 sparsity; the dense figures below are half of those.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class DevicePeak:
  name: str  # the chip, as its datasheet names it
  bfloat16: float  # dense FLOP/s per device
  float32: float  # dense FLOP/s per device at JAX's default float32 matmul precision (module docstring)


# Matched against jax.Device.device_kind, first match wins (so 'H100 PCIe' is tried before 'H100'). A TPU's
# device_kind names the chip ('TPU v4', 'TPU v5 lite' = v5e, 'TPU v5p' or 'TPU v5', 'TPU v6 lite' = v6e); a GPU's
# the product ('NVIDIA A100-SXM4-80GB', 'NVIDIA H100 80GB HBM3', 'NVIDIA H200').
PEAKS: tuple[tuple[str, DevicePeak], ...] = (
  # cloud.google.com/tpu/docs/v4: "Peak compute per chip (bf16) 275 TFLOPs".
  ("TPU v4", DevicePeak("TPU v4", 275e12, 275e12)),
  # cloud.google.com/tpu/docs/v5e: "Peak compute per chip (bf16) 197 TFLOPs".
  ("TPU v5 lite", DevicePeak("TPU v5e", 197e12, 197e12)),
  ("TPU v5e", DevicePeak("TPU v5e", 197e12, 197e12)),
  # cloud.google.com/tpu/docs/v5p: "Peak compute per chip (bf16) 459 TFLOPs".
  ("TPU v5p", DevicePeak("TPU v5p", 459e12, 459e12)),
  ("TPU v5", DevicePeak("TPU v5p", 459e12, 459e12)),
  # cloud.google.com/tpu/docs/v6e: "Peak compute per chip (bf16) 918 TFLOPs".
  ("TPU v6 lite", DevicePeak("TPU v6e", 918e12, 918e12)),
  ("TPU v6e", DevicePeak("TPU v6e", 918e12, 918e12)),
  # NVIDIA A100 Tensor Core GPU datasheet (SXM and PCIe alike): BF16 Tensor Core 312 TFLOPS, TF32 Tensor Core
  # 156 TFLOPS (dense; 624 / 312 with sparsity).
  ("A100", DevicePeak("NVIDIA A100", 312e12, 156e12)),
  # NVIDIA H100 Tensor Core GPU datasheet, H100 PCIe: BF16 1,513 and TF32 756 TFLOPS with sparsity.
  ("H100 PCIe", DevicePeak("NVIDIA H100 PCIe", 756.5e12, 378e12)),
  # NVIDIA H100 Tensor Core GPU datasheet, H100 NVL: BF16 1,671 and TF32 835 TFLOPS with sparsity.
  ("H100 NVL", DevicePeak("NVIDIA H100 NVL", 835.5e12, 417.5e12)),
  # NVIDIA H100 Tensor Core GPU datasheet, H100 SXM: BF16 1,979 and TF32 989 TFLOPS with sparsity (989 / 494.5 dense).
  ("H100", DevicePeak("NVIDIA H100 SXM", 989.5e12, 494.5e12)),
  # NVIDIA H200 Tensor Core GPU datasheet, H200 NVL: BF16 1,671 and TF32 835 TFLOPS with sparsity.
  ("H200 NVL", DevicePeak("NVIDIA H200 NVL", 835.5e12, 417.5e12)),
  # NVIDIA H200 Tensor Core GPU datasheet, H200 SXM: BF16 1,979 and TF32 989 TFLOPS with sparsity (as the H100 SXM).
  ("H200", DevicePeak("NVIDIA H200 SXM", 989.5e12, 494.5e12)),
)


def device_peak(device_kind: str) -> DevicePeak | None:
  """The peak of a device kind.

  Args:
    device_kind: jax.Device.device_kind, e.g. 'TPU v4' or 'NVIDIA H100 80GB HBM3'.

  Returns:
    Its DevicePeak, or None for a kind not in PEAKS (the CPU, older GPUs): MFU is then not reported.
  """
  for pattern, peak in PEAKS:
    if pattern.lower() in device_kind.lower():
      return peak
  return None


def peak_flops(device_kind: str, dtype: str) -> float | None:
  """Dense peak FLOP/s of one device for a compute dtype.

  Args:
    device_kind: jax.Device.device_kind.
    dtype: the run's compute dtype, config.model.dtype: 'bfloat16' or 'float32'.

  Returns:
    FLOP/s per device, or None when the device kind (or the dtype) has no entry.
  """
  peak = device_peak(device_kind)
  return None if peak is None or dtype not in ("bfloat16", "float32") else getattr(peak, dtype)
