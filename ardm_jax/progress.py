"""What a training run says about itself while it runs: the progress line (loss, steps/s, ETA, examples/s,
variables/s, TFLOP/s per device, MFU) and device memory, printed and written to TensorBoard.

Nothing here waits for the device beyond what the trainer already does: a line is computed when the trainer
fetches a step's metrics for it anyway.
"""

from __future__ import annotations

from collections.abc import Callable
import dataclasses
import time
from typing import Any

import jax
import numpy as np

from ardm_jax import device_peaks, model_flops
from ardm_jax.train_state import DataSpec


def check_finite(metrics: dict, step: int, last_saved: int | None) -> None:
  """Raises FloatingPointError naming the non-finite metrics of `step` and the checkpoint that is intact."""
  bad = {k: v for k, v in metrics.items() if not np.isfinite(v)}
  if bad:
    where = f"checkpoint step {last_saved} is intact" if last_saved is not None else "no checkpoint was saved yet"
    raise FloatingPointError(
      f"training diverged at step {step}: {bad} is not finite; stopped without saving this state ({where}). "
      "Resume with a lower --config.optim.learning_rate or --config.optim.clip_norm"
    )


def format_eta(seconds: float) -> str:
  seconds = int(max(seconds, 0))
  return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m{seconds % 60:02d}s"


@dataclasses.dataclass(frozen=True)
class Throughput:
  """What one train step processes, to turn a step rate into examples/s, variables/s, TFLOP/s and MFU.

  Attributes:
    batch_size: the global batch.
    variables: variables per item (D: sub-pixels, characters, samples).
    unit: what a variable is called in the line: 'tokens' (text) or 'dims'.
    flops_per_step: the model FLOPs of one step on the global batch (model_flops.step_flops).
    num_devices: devices the step runs on.
    peak_flops: dense peak FLOP/s of one device for the run's dtype (device_peaks), None where unknown.
  """

  batch_size: int
  variables: int
  unit: str
  flops_per_step: float
  num_devices: int
  peak_flops: float | None

  def scalars(self, steps_per_s: float) -> dict[str, float]:
    """Examples/s, variables/s, TFLOP/s per device and (where the peak is known) MFU at `steps_per_s`."""
    tflops = self.flops_per_step * steps_per_s / self.num_devices / 1e12
    out = {
      "examples_per_s": self.batch_size * steps_per_s,
      f"{self.unit}_per_s": self.batch_size * self.variables * steps_per_s,
      "tflops_per_device": tflops,
    }
    if self.peak_flops:
      out["mfu"] = tflops * 1e12 / self.peak_flops
    return out

  def text(self, steps_per_s: float) -> str:
    values = self.scalars(steps_per_s)
    line = (
      f"{values['examples_per_s']:.4g} examples/s  {values[f'{self.unit}_per_s']:.4g} {self.unit}/s  "
      f"{values['tflops_per_device']:.3g} TFLOP/s/device"
    )
    return line + (f"  MFU {100 * values['mfu']:.1f}%" if "mfu" in values else "")


def peak_note(device_kind: str, dtype: str) -> tuple[float | None, str]:
  """The peak FLOP/s per device for a run and the line that says what MFU is measured against (or why not).

  Args:
    device_kind: jax.Device.device_kind of the run's devices.
    dtype: the compute dtype, config.model.dtype.

  Returns:
    (peak FLOP/s per device or None, the line to print once at the start of the run).
  """
  peak = device_peaks.peak_flops(device_kind, dtype)
  if peak is None:
    return None, f"MFU not reported: no peak FLOP/s known for device kind {device_kind!r} (ardm_jax/device_peaks.py)"
  name = device_peaks.device_peak(device_kind).name
  return peak, f"MFU against the {name} {dtype} peak of {peak / 1e12:.4g} TFLOP/s per device"


def measure_throughput(
  config: Any, spec: DataSpec, num_devices: int, compile_step: Callable, log: Callable, lowered: Any = None
) -> Throughput:
  """Counts the model FLOPs of one train step (model_flops.step_flops) and looks up the device's peak, saying both
  once: the count, what it cost to make, and what MFU is measured against (or why it is not reported).

  Args:
    config: the experiment config.
    spec: the data's shape and classes.
    num_devices: devices the train step runs on (the mesh's).
    compile_step: train.compile_train_step.
    log: prints a line (process 0's print).
    lowered: the trainer's lowered train step, counted directly where it already is the counting program.

  Returns:
    The run's Throughput.
  """
  batch_size = int(config.train.batch_size)
  start = time.perf_counter()
  own = None if lowered is None else (num_devices, lowered)
  flops = model_flops.step_flops(config, spec, batch_size, compile_step, own)
  seconds = time.perf_counter() - start
  peak, note = peak_note(jax.devices()[0].device_kind, config.model.get("dtype", "float32"))
  log(
    f"model FLOPs per train step: {flops:.4g} (global batch {batch_size}; {model_flops.METHOD}; counted in "
    f"{seconds:.1f}s)",
    flush=True,
  )
  log(note, flush=True)
  unit = "tokens" if spec.kind == "text" else "dims"
  return Throughput(batch_size, spec.num_steps, unit, flops, num_devices, peak)


class ProgressLog:
  """Prints a line for the first completed step (its time includes compilation), then every `log_every` steps, and
  at least every `every_s` seconds when `log_every` steps take longer; `due(step)` says whether a step gets one, so
  the trainer fetches only those steps' metrics. Every call checks the metrics it is given (divergence stops the
  run).

  Steps/s and the ETA are measured from the end of the first step over wall time, so they leave compilation out but
  include evaluations and checkpoints (what the rest of the run will also spend). Examples/s, TFLOP/s and MFU are
  measured over the steps since the previous line against `busy_s()`, the time spent in train steps and in
  preparing their batches (goodput.Goodput), so evaluations and checkpoint saves in between do not lower them.
  """

  def __init__(
    self,
    writer,
    log,
    num_steps: int,
    log_every: int,
    every_s: float = 30.0,
    throughput: Throughput | None = None,
    busy_s: Callable[[], float] | None = None,
    t_start: float | None = None,
  ):
    """`t_start`: when the run started compiling (time.time(); default now), so the first line's time includes it."""
    self.writer, self.log, self.num_steps, self.log_every, self.every_s = writer, log, num_steps, log_every, every_s
    self.throughput, self.busy_s = throughput, busy_s or time.time
    self.t_start = time.time() if t_start is None else t_start
    self.last_line = self.t_start
    self.started = False  # whether a step of this process has been reported
    self.t_first = self.step_first = None
    self.last_step = self.last_busy = None

  def due(self, step: int, now: float | None = None) -> bool:
    now = time.time() if now is None else now
    return (
      not self.started or step % self.log_every == 0 or step == self.num_steps or now - self.last_line >= self.every_s
    )

  def __call__(self, step: int, metrics: dict, last_saved: int | None) -> None:
    values = {k: float(v) for k, v in jax.device_get(metrics).items()}  # waits for the step to finish
    check_finite(values, step, last_saved)
    now, busy = time.time(), self.busy_s()
    scalars = dict(values)
    if not self.started:
      self.started, self.t_first, self.step_first = True, now, step
      timing = f"compile + first step {now - self.t_start:.1f}s"
    elif self.due(step, now):
      rate = (step - self.step_first) / max(now - self.t_first, 1e-9)
      timing = f"{rate:.2f} steps/s  ETA {format_eta((self.num_steps - step) / rate)}"
      if self.throughput is not None and step > self.last_step:
        busy_rate = (step - self.last_step) / max(busy - self.last_busy, 1e-9)
        timing += "  " + self.throughput.text(busy_rate)
        scalars |= self.throughput.scalars(busy_rate)
    else:
      return
    self.writer.write_scalars(step, scalars)
    self.log(
      f"step {step}/{self.num_steps}  loss {values['loss']:.4f}  bpd {values['bpd']:.4f}  "
      f"grad_norm {values['grad_norm']:.3f}  {timing}",
      flush=True,
    )
    self.last_line, self.last_step, self.last_busy = now, step, busy


def compiled_memory(compiled: Any) -> dict[str, float] | None:
  """What XLA plans for one device of a compiled program, in bytes.

  Args:
    compiled: a jax.stages.Compiled, or None.

  Returns:
    {arguments, outputs, temporaries, aliased (outputs that reuse donated inputs), estimate (arguments + outputs +
    temporaries - aliased)}, or None where there is no program or the backend gives no memory analysis.
  """
  analysis = compiled.memory_analysis() if compiled is not None else None
  if analysis is None:
    return None
  plan = {
    "arguments": float(analysis.argument_size_in_bytes),
    "outputs": float(analysis.output_size_in_bytes),
    "temporaries": float(analysis.temp_size_in_bytes),
    "aliased": float(analysis.alias_size_in_bytes),
  }
  plan["estimate"] = plan["arguments"] + plan["outputs"] + plan["temporaries"] - plan["aliased"]
  return plan


def memory_report(devices: list, compiled: Any) -> tuple[str, dict[str, float]] | None:
  """Peak device memory in use next to the compiled train step's own estimate of its memory.

  Args:
    devices: this process's devices (jax.local_devices()).
    compiled: the compiled train step (jax.stages.Compiled), or None.

  Returns:
    (a line, TensorBoard scalars), or None where the backend reports no memory stats (the CPU).
  """
  stats = [device.memory_stats() for device in devices]
  if not stats or any(not s or "peak_bytes_in_use" not in s for s in stats):
    return None
  gib = 2.0**30
  peak = max(float(s["peak_bytes_in_use"]) for s in stats)
  limits = [float(s["bytes_limit"]) for s in stats if s.get("bytes_limit")]
  line = f"device memory: peak {peak / gib:.3f} GiB in use (max over {len(stats)} local devices"
  line += f", of {min(limits) / gib:.3f} GiB)" if limits else ")"
  scalars = {"memory/peak_bytes_in_use": peak}
  plan = compiled_memory(compiled)
  if plan is not None:
    detail = ", ".join(f"{name} {plan[name] / gib:.3f}" for name in ("arguments", "outputs", "temporaries"))
    line += (
      f"; the compiled train step's estimate per device {plan['estimate'] / gib:.3f} GiB ({detail}, "
      f"aliased -{plan['aliased'] / gib:.3f})"
    )
    scalars["memory/compiled_estimate_bytes"] = plan["estimate"]
  return line, scalars


def log_memory(writer, log: Callable, step: int, compiled: Any, when: str) -> None:
  """Prints memory_report's line (`when`: e.g. 'first log step') and writes its scalars at `step`; nothing where the
  backend reports no memory stats."""
  report = memory_report(jax.local_devices(), compiled)
  if report is not None:
    log(f"{report[0]} [{when}, step {step}]", flush=True)
    writer.write_scalars(step, report[1])
