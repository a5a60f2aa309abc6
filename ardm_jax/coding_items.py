"""Coding items with a trained model end to end, with the rate statistics of each run.

`compress_items` and `decompress_items` join the model's network call (`coding_model`), the policy (`coding_policy`)
and the coder (`ardm_jax.coding`), and measure what a file costs: header, records and payload bytes, network
calls, seconds, and (encoder only) the model's own NLL of the items under the same orders and policy.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np

from ardm_jax.coding import codec
from ardm_jax.coding.container import Container, ContainerError, check_crc, check_policy, check_stages
from ardm_jax.coding.orders import stage_orders
from ardm_jax.coding.packing import unpack_container
from ardm_jax.coding.walk import decode_items, decode_stream
from ardm_jax.coding_model import CodingModel, Predictor
from ardm_jax.coding_policy import decoder_policy
from ardm_jax.file_items import decode_file_table

# Decoding refuses containers claiming more coded symbols (N * S * D) than this (2**27 = 43,690 CIFAR images,
# 134M characters): a corrupt item count must fail fast instead of allocating.
MAX_DECODE_SYMBOLS = 1 << 27


@dataclasses.dataclass
class CodingStats:
  """What one compress or decompress run cost (bytes, calls, seconds) and, encoder only, the model's NLL."""

  mode: str
  num_items: int
  item_shape: tuple
  policy_steps: int
  network_calls: int
  seconds: float
  total_bytes: int
  header_bytes: int  # magic .. order seed (+ file table): paid once per container
  payload_bytes: int  # the ANS streams alone
  model_nll_bits: float | None = None  # sum of -log2 p under the network's float32 tables (encoder only)
  table_nll_bits: float | None = None  # the same under the quantised integer tables the coder uses
  item_payload_bytes: tuple = ()

  @property
  def dims(self) -> int:
    return self.num_items * int(np.prod(self.item_shape))

  @property
  def record_bytes(self) -> int:  # CRC + length varint per stream
    return self.total_bytes - self.header_bytes - self.payload_bytes

  def bpd(self, num_bits: float) -> float:
    return num_bits / self.dims


class _NllMeter:
  """Wraps the predictor on the encoder side to add up the model's and the coder's -log2 p of the items."""

  positions_only = True

  def __init__(self, predictor: Predictor, x_NxD: np.ndarray, slots_SxK: np.ndarray):
    self.predictor, self.x, self.slots = predictor, x_NxD, np.asarray(slots_SxK)
    self.model_bits = np.zeros(len(x_NxD))
    self.table_bits = np.zeros(len(x_NxD))

  def __call__(self, x_in, known, t, pos_n):
    return self.dispatch(x_in, known, t, pos_n)()

  def dispatch(self, x_in, known, t, pos_n):
    if hasattr(self.predictor, "dispatch"):
      pending = self.predictor.dispatch(x_in, known, t, pos_n)
    else:  # a plain callable: called when the result is asked for
      pending = lambda: self.predictor(x_in, known, t, pos_n)  # noqa: E731

    def result():
      params = pending()
      sym = self.slots[t // self.x.shape[1]][self.x[:, pos_n]]
      self.model_bits += self.predictor.symbols.model_bits(params, sym).sum(axis=1)
      self.table_bits += self.predictor.symbols.code_bits(params, sym).sum(axis=1)
      return params

    return result


def compress_items(
  cm: CodingModel, items: np.ndarray, *, mode: str, steps, order_seed: int, file_table: bytes = b""
) -> tuple[bytes, CodingStats]:
  """Codes items into one compact container with len(steps) network calls, measuring the model's NLL too.

  Args:
    cm: the coding model.
    items: int [N, *model shape].
    mode: 'item' or 'dataset'.
    steps: the global policy, int [P].
    order_seed: the seed of the orders.
    file_table: opaque bytes stored in the header (see ardm_jax/file_items.py).

  Returns:
    (the container's bytes, its `CodingStats` with the model's and the quantised tables' NLL in bits).
  """
  spec, transitions = cm.spec, cm.objective.transitions
  items = np.asarray(items)
  if items.shape[1:] != spec.shape or len(items) < 1:
    raise ValueError(f"items must have shape [N, *{spec.shape}] with N >= 1, got {items.shape}")
  x_NxD = items.reshape(len(items), -1).astype(np.int32)
  meter = _NllMeter(cm.predictor, x_NxD, transitions.slots)
  calls, start = cm.predictor.calls, time.perf_counter()
  data = codec.compress(
    meter,
    items,
    mode=mode,
    fingerprint=cm.fingerprint,
    kind=spec.kind,
    policy=steps,
    order_seed=order_seed,
    num_classes=spec.num_classes,
    file_table=file_table,
    stages=transitions,
    symbols=cm.predictor.symbols,
    compact=True,
  )
  seconds = time.perf_counter() - start
  c = unpack_container(data, expected_fingerprint=cm.fingerprint, expected_shape=spec.shape, num_stages=cm.num_stages)
  stats = CodingStats(
    mode=mode,
    num_items=len(items),
    item_shape=spec.shape,
    policy_steps=len(steps),
    network_calls=cm.predictor.calls - calls,
    seconds=seconds,
    total_bytes=len(data),
    header_bytes=len(c.header),
    payload_bytes=sum(len(p) for p in c.payloads),
    model_nll_bits=float(meter.model_bits.sum()),
    table_nll_bits=float(meter.table_bits.sum()),
    item_payload_bytes=tuple(len(p) for p in c.payloads),
  )
  return data, stats


def decompress_items(
  cm: CodingModel, data: bytes, *, policy_file: str | None = None, max_symbols: int = MAX_DECODE_SYMBOLS
) -> tuple[Container, np.ndarray, CodingStats]:
  """Decodes a container made by `compress_items` (inverse of it).

  Args:
    cm: the coding model that made it.
    data: the container's bytes.
    policy_file: the policy file used for compression (default: the workdir's policy.json).
    max_symbols: a cap on the coded symbols N * S * D, checked before decoding.

  Returns:
    (the parsed `Container`, items int32 [N, *shape], `CodingStats`).

  Raises:
    ContainerError: any problem with the file (another model, corrupt, truncated, unknown policy).
  """
  spec, transitions = cm.spec, cm.objective.transitions
  c = unpack_container(
    data,
    expected_fingerprint=cm.fingerprint,
    expected_shape=spec.shape,
    max_symbols=max_symbols,
    num_stages=cm.num_stages,
  )
  if c.kind != spec.kind:
    raise ContainerError(f"the file holds {c.kind} data but the model codes {spec.kind}")
  check_stages(c, cm.num_stages)
  predictor = cm.predictor.with_symbols(c.symbols)  # files written before splits existed use K-wide tables
  decode_file_table(c.file_table, spec, c.num_items)  # a corrupt table fails here, before any network call
  steps = check_policy(c, decoder_policy(cm, c, policy_file))
  sigma = stage_orders(c.order_seed, c.D, c.num_stages)
  calls, start = predictor.calls, time.perf_counter()
  decode = decode_stream if c.mode == "dataset" else decode_items
  x = decode(
    predictor,
    c.payloads[0] if c.mode == "dataset" else list(c.payloads),
    sigma,
    steps,
    c.num_items,
    c.D,
    spec.num_classes,
    transitions,
    predictor.symbols,
  )
  check_crc(c, x, spec.num_classes)
  stats = CodingStats(
    mode=c.mode,
    num_items=c.num_items,
    item_shape=c.item_shape,
    policy_steps=len(steps),
    network_calls=predictor.calls - calls,
    seconds=time.perf_counter() - start,
    total_bytes=len(data),
    header_bytes=len(c.header),
    payload_bytes=sum(len(p) for p in c.payloads),
    item_payload_bytes=tuple(len(p) for p in c.payloads),
  )
  return c, x.reshape((c.num_items,) + c.item_shape), stats
