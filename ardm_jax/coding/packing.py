"""The container's header layouts, version by version: `pack_container` and `unpack_container`.

A container is a header followed by records (`container.read_tail`): one ANS stream for all N items (mode
'dataset') or one per item in item order (mode 'item'). Versions 1 and 2 store every field; version 3 (compact,
what `ardm compress` writes) leaves out what the decoder's model implies. A reader takes any version: the first
byte tells (b"AR" or 0xA3). Nothing proportional to a claimed size is allocated before it has been checked
against the file length and `max_symbols`.

Versions 1 and 2 (version 1 holds every one-stage model's files, byte for byte as in the first release; version 2
is written only for S >= 2 stages and adds the field `stages`):

    field          bytes     meaning
    magic          2         b"AR"
    version        1         1 (S = 1) or 2 (S >= 2)
    flags          1         bit 0: mode (0 per item, 1 per data set); bits 1-2: kind (0 image, 1 text,
                             2 audio); bit 3: a file table follows the order seed; bit 4: variables coded
                             by binary splits of a mixture (0: tables); bits 5-7 zero
    fingerprint    4         first 4 bytes of the model fingerprint (parameters + config hash)
    ndim           varint    number of item dimensions (1..8)
    shape          varint*   each item dimension (>= 1); D = product
    num_items      varint    N >= 1
    stages         varint    version 2 only: S (2..64)
    budget         varint    number of global policy steps P (1..S*D)
    policy hash    4         `container.policy_hash` of the global steps
    order seed     varint    sigma_s = orders.stage_orders(seed, D, S)[s]
    file table     varint + bytes, only with flag bit 3: length (>= 1) then opaque bytes for the caller
    records        crc32 (4) + length (varint) + payload, once per data set or once per item

Version 3 (compact):

    field          bytes     meaning
    magic          1         0xA3
    flags          1         bits 0-4 as above; bit 5 shape stored; bit 6 policy stored; bit 7 order seed
                             and item count stored
    fingerprint    2         first 2 bytes of the model fingerprint
    shape          varint ndim + varint dims, only with bit 5 (else the model's item shape)
    policy         varint budget P (1..S*D-1) + 4-byte policy hash, only with bit 6 (else one call per
                   variable and stage: P = S * D, the only policy of that budget)
    seed, count    only with bit 7 (else seed 0 and N = 1): varint (seed << 1 | [N > 1]), then varint N if N > 1
    file table     as above, only with bit 3
    records        as above, but the last record without its length (it runs to the end of the file)

S is the model's stage count (not stored in version 3). A payload is constriction's uint32 words as little-endian
bytes with up to 3 trailing zero bytes dropped. Fixed costs: a single 8x8x1 digits image in per-item mode costs
24 bytes in version 1 (header 19 + record 5) and 8 bytes in version 3 with the defaults (4 header + 4 CRC).
"""

from __future__ import annotations

from collections.abc import Sequence
import zlib

import numpy as np

from ardm_jax.coding.checks import MAX_STAGES, MAX_SYMBOLS, check_items, check_policy, check_uint
from ardm_jax.coding.container import (
  COMPACT_FINGERPRINT_BYTES,
  COMPACT_FORMAT_VERSION,
  COMPACT_MAGIC,
  FINGERPRINT_BYTES,
  FORMAT_VERSION,
  FORMAT_VERSIONS,
  KINDS,
  MAGIC,
  MAX_NDIM,
  MODES,
  POLICY_HASH_BYTES,
  STAGED_FORMAT_VERSION,
  SYMBOL_MODELS,
  Container,
  ContainerError,
  Reader,
  compact_crc_base,
  fingerprint_bytes,
  policy_hash,
  read_shape,
  read_tail,
  record_crcs,
  varint_bytes,
)


def pack_container(
  payloads: Sequence[bytes],
  x_BxD,
  *,
  mode: str,
  fingerprint: str,
  kind: str,
  item_shape,
  policy,
  order_seed: int,
  num_classes: int,
  file_table: bytes = b"",
  num_stages: int = 1,
  symbols: str = "tables",
  compact: bool = False,
  implied_shape=None,
) -> bytes:
  """Builds a container around coded payloads.

  Args:
    payloads: the ANS payloads: one for mode 'dataset', one per item for mode 'item'.
    x_BxD: the original items (flattened), int [B, D], for the CRCs.
    mode: 'item' or 'dataset'.
    fingerprint: the model's full hex fingerprint (its first 4 bytes are stored, 2 in version 3).
    kind: 'image', 'text' or 'audio'.
    item_shape: the shape of one item (1..8 dimensions).
    policy: the global steps, int [P].
    order_seed: the seed of the orders.
    num_classes: K.
    file_table: optional caller bytes kept in the header.
    num_stages: the model's S (version 1 for S = 1, version 2 otherwise).
    symbols: the symbol model's name, 'tables' or 'splits'.
    compact: write version 3, leaving out what the model implies.
    implied_shape: the model's item shape (version 3 stores the shape only when it differs).

  Returns:
    The container's bytes.

  Raises:
    ValueError: an argument out of range.
  """
  if symbols not in SYMBOL_MODELS:
    raise ValueError(f"symbols must be one of {SYMBOL_MODELS}, got {symbols!r}")
  if not isinstance(file_table, (bytes, bytearray)):
    raise ValueError(f"file_table must be bytes, got {type(file_table).__name__}")
  if mode not in MODES or kind not in KINDS:
    raise ValueError(f"mode must be one of {MODES} and kind one of {KINDS}, got {mode!r}, {kind!r}")
  S = check_uint(num_stages, "num_stages", MAX_STAGES + 1)
  if S < 1:
    raise ValueError(f"num_stages must be in 1..{MAX_STAGES}, got {num_stages}")
  shape = tuple(int(d) for d in item_shape)
  if not 1 <= len(shape) <= MAX_NDIM or min(shape) < 1:
    raise ValueError(f"item_shape must have 1..{MAX_NDIM} dimensions, each >= 1, got {item_shape!r}")
  D = int(np.prod(shape))
  x = check_items(x_BxD, num_classes)
  if x.shape[1] != D or x.shape[0] * D * S > MAX_SYMBOLS:
    raise ValueError(f"items of shape {x.shape} do not match item_shape {shape} (D = {D}), or are too many")
  steps = check_policy(policy, D, S)
  n_payloads = 1 if mode == "dataset" else x.shape[0]
  if len(payloads) != n_payloads:
    raise ValueError(f"mode {mode!r} with {x.shape[0]} items needs {n_payloads} payloads, got {len(payloads)}")
  if compact:
    return _pack_compact(
      payloads,
      x,
      mode=mode,
      fingerprint=fingerprint,
      kind=kind,
      shape=shape,
      implied_shape=implied_shape,
      steps=steps,
      S=S,
      order_seed=order_seed,
      num_classes=num_classes,
      file_table=bytes(file_table),
      symbols=symbols,
    )
  version = FORMAT_VERSION if S == 1 else STAGED_FORMAT_VERSION
  header = b"".join(
    [
      MAGIC,
      bytes(
        [
          version,
          MODES.index(mode) | (KINDS.index(kind) << 1) | (bool(file_table) << 3) | (SYMBOL_MODELS.index(symbols) << 4),
        ]
      ),
      fingerprint_bytes(fingerprint, "fingerprint"),
      varint_bytes(len(shape)),
      *[varint_bytes(d) for d in shape],
      varint_bytes(x.shape[0]),
      varint_bytes(S) if S > 1 else b"",
      varint_bytes(len(steps)),
      policy_hash(steps, D, S),
      varint_bytes(check_uint(order_seed, "order seed", 1 << 64)),
      varint_bytes(len(file_table)) + bytes(file_table) if file_table else b"",
    ]
  )
  records = [
    crc.to_bytes(4, "little") + varint_bytes(len(p)) + bytes(p)
    for crc, p in zip(record_crcs(zlib.crc32(header), mode, x, num_classes), payloads)
  ]
  return header + b"".join(records)


def _pack_compact(
  payloads, x, *, mode, fingerprint, kind, shape, implied_shape, steps, S, order_seed, num_classes, file_table, symbols
) -> bytes:
  D = int(np.prod(shape))
  store_shape = implied_shape is None or tuple(int(d) for d in implied_shape) != shape
  store_policy = len(steps) != S * D  # one call per variable and stage is the only policy of budget S * D
  seed = check_uint(order_seed, "order seed", 1 << 64)
  store_count = seed != 0 or x.shape[0] != 1
  flags = (
    MODES.index(mode)
    | (KINDS.index(kind) << 1)
    | (bool(file_table) << 3)
    | (SYMBOL_MODELS.index(symbols) << 4)
    | (store_shape << 5)
    | (store_policy << 6)
    | (store_count << 7)
  )
  header = b"".join(
    [
      bytes([COMPACT_MAGIC, flags]),
      fingerprint_bytes(fingerprint, "fingerprint")[:COMPACT_FINGERPRINT_BYTES],
      varint_bytes(len(shape)) + b"".join(varint_bytes(d) for d in shape) if store_shape else b"",
      varint_bytes(len(steps)) + policy_hash(steps, D, S) if store_policy else b"",
      # The seed and whether more than one item follows share a varint: a searched seed of one item costs 1 byte.
      varint_bytes((seed << 1) | (x.shape[0] > 1)) + (varint_bytes(x.shape[0]) if x.shape[0] > 1 else b"")
      if store_count
      else b"",
      varint_bytes(len(file_table)) + file_table if file_table else b"",
    ]
  )
  crcs = record_crcs(compact_crc_base(header, fingerprint), mode, x, num_classes)
  # The last record's length is the rest of the file.
  records = [
    crc.to_bytes(4, "little") + (varint_bytes(len(p)) if j < len(payloads) - 1 else b"") + bytes(p)
    for j, (crc, p) in enumerate(zip(crcs, payloads))
  ]
  return header + b"".join(records)


def unpack_container(
  data: bytes,
  *,
  expected_fingerprint: str | None,
  expected_shape=None,
  max_symbols: int = MAX_SYMBOLS,
  num_stages: int = 1,
) -> Container:
  """Parses and checks a container of any version.

  Args:
    data: the file's bytes.
    expected_fingerprint: the decoder's model fingerprint (hex); None skips the model check (only for inspecting
      headers; a compact file's CRCs then cannot be checked).
    expected_shape: the model's item shape: what a compact file leaves out, and checked against the stored one.
    max_symbols: a cap on the coded symbols N * S * D; pass a tight one (a corrupt count below the cap is still
      caught, by the coder or the CRC, but only after decoding that many symbols).
    num_stages: the model's S, which a compact file leaves out.

  Returns:
    The parsed `Container`.

  Raises:
    ContainerError: a malformed, corrupt, truncated file or one made for another model, naming the problem.
    ValueError: `data` is not bytes, or a compact file without `expected_shape`.
  """
  if not isinstance(data, (bytes, bytearray, memoryview)):
    raise ValueError(f"container data must be bytes, got {type(data).__name__}")
  data = bytes(data)
  r = Reader(data)
  if not data:
    raise ContainerError("empty file: not an ARDM container")
  if data[0] == COMPACT_MAGIC:
    return _unpack_compact(data, expected_fingerprint, expected_shape, max_symbols, num_stages)
  magic = data[: len(MAGIC)]
  if magic != MAGIC[: len(magic)]:
    raise ContainerError(f"not an ARDM container: bad magic {magic!r} (expected {MAGIC!r})")
  r.take(len(MAGIC), "magic")
  version = r.take(1, "version")[0]
  if version not in (FORMAT_VERSION, STAGED_FORMAT_VERSION):  # version 3 has its own one-byte magic
    raise ContainerError(
      f"unsupported container version {version}; this build reads versions {', '.join(map(str, FORMAT_VERSIONS))}"
    )
  flags = r.take(1, "flags")[0]
  if flags >> 5 or (flags >> 1) & 3 >= len(KINDS):
    raise ContainerError(f"corrupt header: unknown flag bits 0x{flags:02x}")
  mode, kind = MODES[flags & 1], KINDS[(flags >> 1) & 3]
  fp = r.take(FINGERPRINT_BYTES, "fingerprint")
  if expected_fingerprint is not None:
    want = fingerprint_bytes(expected_fingerprint, "expected_fingerprint")
    if fp != want:
      raise ContainerError(
        f"model fingerprint mismatch: the file was made with model {fp.hex()}, "
        f"this model is {want.hex()}; load the model that made it"
      )
  shape = read_shape(r, max_symbols)
  D = int(np.prod(shape))
  num_items = r.varint("num_items")
  if num_items < 1 or num_items * D > max_symbols:
    raise ContainerError(f"corrupt header: implausible size, {num_items} items of {D} variables")
  num_stages = 1
  if version == STAGED_FORMAT_VERSION:
    num_stages = r.varint("stages")
    if not 2 <= num_stages <= MAX_STAGES or num_items * D * num_stages > max_symbols:
      raise ContainerError(
        f"corrupt header: implausible stage count {num_stages} for {num_items} items of "
        f"{D} variables (allowed 2..{MAX_STAGES})"
      )
  budget = r.varint("budget")
  if not 1 <= budget <= num_stages * D:
    raise ContainerError(f"corrupt header: policy budget {budget} outside 1..S*D={num_stages * D}")
  p_hash = r.take(POLICY_HASH_BYTES, "policy hash")
  seed = r.varint("order seed")
  file_table, header, crcs, payloads = read_tail(
    r, data, flags, 1 if mode == "dataset" else num_items, last_length_implied=False
  )
  if expected_shape is not None and tuple(shape) != tuple(expected_shape):
    raise ContainerError(f"item shape {tuple(shape)} in the file does not match the model's {tuple(expected_shape)}")
  return Container(
    version,
    mode,
    fp.hex(),
    kind,
    tuple(shape),
    num_items,
    budget,
    p_hash,
    seed,
    crcs,
    payloads,
    header,
    file_table,
    num_stages,
    SYMBOL_MODELS[(flags >> 4) & 1],
    zlib.crc32(header),
  )


def _unpack_compact(data: bytes, expected_fingerprint, expected_shape, max_symbols: int, S: int) -> Container:
  r = Reader(data)
  r.take(1, "magic")
  flags = r.take(1, "flags")[0]
  if (flags >> 1) & 3 >= len(KINDS):
    raise ContainerError(f"corrupt header: unknown flag bits 0x{flags:02x}")
  mode, kind = MODES[flags & 1], KINDS[(flags >> 1) & 3]
  fp = r.take(COMPACT_FINGERPRINT_BYTES, "fingerprint")
  if expected_fingerprint is not None:
    want = fingerprint_bytes(expected_fingerprint, "expected_fingerprint")[:COMPACT_FINGERPRINT_BYTES]
    if fp != want:
      raise ContainerError(
        f"model fingerprint mismatch: the file was made with model {fp.hex()}..., "
        f"this model is {want.hex()}...; load the model that made it"
      )
  S = check_uint(S, "num_stages", MAX_STAGES + 1)
  if flags & 32:
    shape = read_shape(r, max_symbols)
  elif expected_shape is None:
    raise ValueError("a compact file's item shape is the model's: pass expected_shape")
  else:
    shape = tuple(int(d) for d in expected_shape)
  D = int(np.prod(shape))
  if flags & 64:
    budget = r.varint("budget")
    if not 1 <= budget < S * D:
      raise ContainerError(f"corrupt header: policy budget {budget} outside 1..S*D-1={S * D - 1}")
    p_hash = r.take(POLICY_HASH_BYTES, "policy hash")
  else:
    budget = S * D
    p_hash = policy_hash(np.arange(S * D), D, S)
  seed, num_items = 0, 1
  if flags & 128:
    packed = r.varint("order seed")
    seed = packed >> 1
    if packed & 1:
      num_items = r.varint("num_items")
      if num_items < 2:
        raise ContainerError(f"corrupt header: {num_items} items where more than one was announced")
  if num_items < 1 or num_items * D * S > max_symbols:
    raise ContainerError(f"corrupt header: implausible size, {num_items} items of {D} variables")
  file_table, header, crcs, payloads = read_tail(
    r, data, flags, 1 if mode == "dataset" else num_items, last_length_implied=True
  )
  if expected_shape is not None and shape != tuple(expected_shape):
    raise ContainerError(f"item shape {shape} in the file does not match the model's {tuple(expected_shape)}")
  base = None if expected_fingerprint is None else compact_crc_base(header, expected_fingerprint)
  return Container(
    COMPACT_FORMAT_VERSION,
    mode,
    fp.hex(),
    kind,
    shape,
    num_items,
    budget,
    p_hash,
    seed,
    crcs,
    payloads,
    header,
    file_table,
    S,
    SYMBOL_MODELS[(flags >> 4) & 1],
    base,
  )
