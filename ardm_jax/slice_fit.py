"""Whether a train step fits a TPU slice's HBM, and if not, which settings make it fit, each one measured.

A program fits when its peak per device (arguments + outputs - donated + temporaries, from the compiler's own
buffer assignment) leaves FIT_MARGIN of the chip's HBM free: the runtime's own buffers, allocator fragmentation
and a later XLA's different choices all need room that the ahead-of-time estimate does not show.

Where the step does not fit (or fits with less than the margin), the search compiles the step again with one
change at a time and reports the first of each kind that fits:
  remat      the next choices in REMAT_BY_MEMORY: more recompute, less activation memory;
  fsdp       parameters, gradients and optimizer state split over every chip (mesh.fsdp = all, data = 1);
  batch      half the per-device batch: the same global batch needs twice the chips (the next slice), or the
             global batch halved (a different experiment).
"""

from __future__ import annotations

from collections.abc import Callable
import dataclasses

FIT_MARGIN = 0.15
# Remat choices by the activation memory they keep, most first (measured for text8 on v5e-16: none 12.78 GiB,
# attention 10.80, dots_with_no_batch_dims_saveable 5.23, full 2.99; experiments/text8.py).
REMAT_BY_MEMORY = ("none", "attention", "dots_with_no_batch_dims_saveable", "full")


@dataclasses.dataclass(frozen=True)
class Measured:
  """One compile of the train step: its peak bytes per device, or the compiler's refusal."""

  peak: int | None
  error: str = ""  # the compiler's out-of-memory message where it did not fit at all


def fits(m: Measured, hbm: int) -> bool:
  return m.peak is not None and m.peak <= (1 - FIT_MARGIN) * hbm


def _gib(n: float) -> str:
  return f"{n / 2**30:.2f} GiB"


def describe(m: Measured, hbm: int) -> str:
  if m.peak is None:
    return f"out of memory: {m.error}"
  return f"{_gib(m.peak)}, {100 * m.peak / hbm:.0f}% of HBM"


def candidates(remat: str, fsdp: int, data: int, num_devices: int, batch_size: int) -> list[tuple[str, list[list]]]:
  """The changes to try, by kind: (kind, [overrides of one candidate, ...]) in the order they are tried."""
  out = []
  if remat in REMAT_BY_MEMORY:
    later = REMAT_BY_MEMORY[REMAT_BY_MEMORY.index(remat) + 1 :]
    if later:
      out.append(("remat", [[f"--config.model.remat={r}"] for r in later]))
  if fsdp != num_devices and num_devices > 1:
    out.append(("fsdp", [[f"--config.mesh.fsdp={num_devices}", "--config.mesh.data=1"]]))
  if batch_size % 2 == 0 and batch_size // 2 >= num_devices and data != 1:
    out.append(("batch", [[f"--config.train.batch_size={batch_size // 2}"]]))
  return out


def search(
  measure: Callable[[list[str]], Measured],
  kinds: list[tuple[str, list[list[str]]]],
  hbm: int,
  log: Callable[[str], None] = lambda _: None,
) -> list[tuple[str, list[str], Measured]]:
  """Measures each kind's candidates in order until one fits; returns (kind, overrides, measurement) per kind: the
  first candidate that fits, else the last one tried (the one that saves the most)."""
  found = []
  for kind, options in kinds:
    for overrides in options:
      log(f"fit search: compiling the train step with {' '.join(overrides)}")
      m = measure(overrides)
      if fits(m, hbm):
        break
    found.append((kind, overrides, m))
  return found


def verdict(current: Measured, hbm: int, topology: str, found, next_slice: str | None) -> str:
  """One line: fits (with the share of HBM it leaves), or does not, with the measured fixes."""
  free = f"at least {100 * FIT_MARGIN:.0f}% of HBM free"
  if fits(current, hbm):
    return f"FIT: the train step fits {topology} with {100 * (1 - current.peak / hbm):.0f}% of HBM free."
  state = "does not fit" if current.peak is None or current.peak > hbm else f"fits without {free}"
  fixes = []
  for kind, overrides, m in found:
    note = ""
    if kind == "batch":
      note = f" (the same global batch on {next_slice or 'twice the chips'}, or a smaller global batch)"
    fixes.append(f"{' '.join(overrides)}{note}: {'fits' if fits(m, hbm) else 'not enough'}, {describe(m, hbm)}")
  if not fixes:
    return f"FIT: the train step {state} on {topology} ({describe(current, hbm)}); nothing left to try here."
  return f"FIT: the train step {state} on {topology} ({describe(current, hbm)}); measured: " + "; ".join(fixes)
