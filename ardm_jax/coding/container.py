"""The container's shared parts: its errors, the parsed record, varints, CRCs, and checks against a model.

Every container version (see `packing` for the header layouts) is built from the same pieces, kept here: unsigned
LEB128 varints (shortest form only, integers otherwise little-endian), a bounds-checked `Reader` that turns any
truncation into a `ContainerError`, records of crc32 + length + payload, and the CRC chain. Each CRC covers the
header and the original items (data values, not states), so a corrupted header that still parses cannot pass
either: per data set crc32(items, base); per item j crc32(item_j, crc32(varint(j), base)), with base =
crc32(header) in versions 1 and 2 and crc32(header, crc32(b"ardm-compact" + the whole fingerprint)) in version 3.
Items are hashed as their flattened values in uint8 (K <= 256), uint16 LE (K <= 65536) or uint32 LE.

A decoder checks the parsed `Container` against its model (`check_stages`, `check_symbols`, `check_policy`)
before any network call, and the decoded items against the CRCs (`check_crc`) after: a mismatch anywhere (another
model, policy, device kind or XLA) is an error, never wrong data.
"""

from __future__ import annotations

import dataclasses
import hashlib
import zlib

import numpy as np

from ardm_jax.coding.checks import check_policy as check_policy_steps

MAGIC = b"AR"
FORMAT_VERSION = 1  # one-stage models: unchanged since the first release, so those files stay identical
STAGED_FORMAT_VERSION = 2  # S >= 2 stages: version 1 plus the stage count
COMPACT_FORMAT_VERSION = 3  # what the model implies is left out (see `packing`)
FORMAT_VERSIONS = (FORMAT_VERSION, STAGED_FORMAT_VERSION, COMPACT_FORMAT_VERSION)
COMPACT_MAGIC = 0xA3  # the first byte of a compact file; older files start with b"AR"
COMPACT_FINGERPRINT_BYTES = 2
MODES = ("item", "dataset")
KINDS = ("image", "text", "audio")
SYMBOL_MODELS = ("tables", "splits")  # flag bit 4: how the variables were coded (entropy_models)
FINGERPRINT_BYTES = 4
POLICY_HASH_BYTES = 4
MAX_NDIM = 8


class ContainerError(ValueError):
  """A compressed file that is malformed, corrupt, truncated or made for another model."""


@dataclasses.dataclass(frozen=True)
class Container:
  """A parsed container; `header` is the byte prefix the CRCs cover.

  Attributes:
    version: 1, 2 or 3.
    mode: 'item' (one ANS stream per item) or 'dataset' (one for all).
    fingerprint: hex of the stored truncation of the model fingerprint.
    kind: 'image', 'text' or 'audio'.
    item_shape: the shape of one item; D = its product.
    num_items: N.
    budget: P, the number of global policy steps.
    policy_hash: the 4-byte `policy_hash` of the global policy.
    order_seed: the seed of the orders (`orders.stage_orders`).
    crcs: one CRC-32 per record.
    payloads: one ANS payload per record.
    header: the header bytes.
    file_table: opaque caller bytes (flag bit 3); b"" when absent.
    num_stages: S (stored in version 2 only; a compact file takes it from the model).
    symbols: how the variables were coded: 'tables' or 'splits' (flag bit 4), see `entropy_models`.
    crc_base: what the records' CRCs continue from (None: a compact file read without the model).
  """

  version: int
  mode: str
  fingerprint: str
  kind: str
  item_shape: tuple
  num_items: int
  budget: int
  policy_hash: bytes
  order_seed: int
  crcs: tuple
  payloads: tuple
  header: bytes
  file_table: bytes = b""
  num_stages: int = 1
  symbols: str = "tables"
  crc_base: int | None = None

  @property
  def D(self) -> int:
    """D, the number of variables per item (the product of `item_shape`)."""
    return int(np.prod(self.item_shape))


def varint_bytes(v: int) -> bytes:
  """Unsigned LEB128, the container's integer encoding (shortest form).

  Args:
    v: a non-negative integer.

  Returns:
    Its bytes, 7 bits each, least significant first.
  """
  out = bytearray()
  while True:
    b, v = v & 0x7F, v >> 7
    out.append(b | (0x80 if v else 0))
    if not v:
      return bytes(out)


class Reader:
  """Reads fields from the front of a byte string; running out of bytes is a `ContainerError`.

  Attributes:
    data: the bytes.
    pos: the offset of the next unread byte.
  """

  def __init__(self, data: bytes):
    self.data, self.pos = data, 0

  def take(self, n: int, what: str) -> bytes:
    """The next `n` bytes (`what` names them in the error when fewer are left)."""
    if n > len(self.data) - self.pos:
      raise ContainerError(
        f"truncated file: {what} needs {n} bytes at offset {self.pos}, only {len(self.data) - self.pos} left"
      )
    out = self.data[self.pos : self.pos + n]
    self.pos += n
    return out

  def varint(self, what: str) -> int:
    """The next varint; a non-shortest form or a value >= 2**64 is a `ContainerError`."""
    value = 0
    for i in range(10):
      b = self.take(1, what)[0]
      value |= (b & 0x7F) << (7 * i)
      if not b & 0x80:
        if (b == 0 and i > 0) or value >= 1 << 64:
          raise ContainerError(f"corrupt header: malformed varint for {what}")
        return value
    raise ContainerError(f"corrupt header: varint for {what} is too long")


def read_tail(r: Reader, data: bytes, flags: int, n_records: int, last_length_implied: bool):
  """Reads the optional file table (flag bit 3) and the records that end every container.

  Each record is crc32 (4 bytes LE) + length varint + payload; with `last_length_implied` (version 3) the last
  record has no length and runs to the end of the file.

  Returns:
    (file table bytes, header bytes (everything before the records), crcs tuple, payloads tuple).

  Raises:
    ContainerError: truncated file or trailing bytes.
  """
  file_table = b""
  if flags & 8:
    n = r.varint("file table length")
    if n < 1:
      raise ContainerError("corrupt header: empty file table")
    file_table = r.take(n, "file table")
  header = data[: r.pos]
  least = 5 * n_records - last_length_implied
  if least > len(data) - r.pos:
    raise ContainerError(f"truncated file: {n_records} records need at least {least} bytes, {len(data) - r.pos} left")
  crcs, payloads = [], []
  for j in range(n_records):
    crcs.append(int.from_bytes(r.take(4, f"crc of record {j}"), "little"))
    last = last_length_implied and j == n_records - 1
    length = len(data) - r.pos if last else r.varint(f"length of record {j}")
    payloads.append(r.take(length, f"payload of record {j}"))
  if r.pos != len(data):
    raise ContainerError(f"trailing garbage: {len(data) - r.pos} unexpected bytes after the last record")
  return file_table, header, tuple(crcs), tuple(payloads)


def read_shape(r: Reader, max_symbols: int) -> tuple:
  """Reads ndim then the item dimensions, each checked before the next.

  Args:
    r: the reader, positioned at the ndim varint.
    max_symbols: the largest allowed product of the dimensions.

  Returns:
    The item shape, a tuple of ints.

  Raises:
    ContainerError: ndim is outside 1..MAX_NDIM, a dimension is < 1, the product exceeds `max_symbols`, or the
      file is truncated.
  """
  ndim = r.varint("ndim")
  if not 1 <= ndim <= MAX_NDIM:
    raise ContainerError(f"corrupt header: {ndim} item dimensions (allowed 1..{MAX_NDIM})")
  shape, D = [], 1
  for i in range(ndim):
    d = r.varint(f"shape[{i}]")
    D *= d
    if d < 1 or D > max_symbols:
      raise ContainerError(f"corrupt header: implausible item dimension {d}")
    shape.append(d)
  return tuple(shape)


def fingerprint_bytes(fingerprint: str, what: str) -> bytes:
  """The stored truncation of a hex fingerprint.

  Args:
    fingerprint: the fingerprint, a hex string.
    what: what names the fingerprint in the error message.

  Returns:
    Its first FINGERPRINT_BYTES bytes.

  Raises:
    ValueError: (naming `what`) it is not a hex string of at least 2 * FINGERPRINT_BYTES digits.
  """
  try:
    fp = bytes.fromhex(fingerprint[: 2 * FINGERPRINT_BYTES])
  except (TypeError, ValueError):
    fp = b""
  if len(fp) != FINGERPRINT_BYTES:
    raise ValueError(f"{what} must be a hex string of at least {2 * FINGERPRINT_BYTES} digits, got {fingerprint!r}")
  return fp


def _item_bytes(x_D: np.ndarray, num_classes: int) -> bytes:
  dtype = "u1" if num_classes <= 1 << 8 else "<u2" if num_classes <= 1 << 16 else "<u4"
  return np.ascontiguousarray(x_D, dtype=dtype).tobytes()


def compact_crc_base(header: bytes, fingerprint: str) -> int:
  """Where a compact file's CRCs start.

  They also cover the model's whole fingerprint (only 2 bytes are stored), so another model that shares those
  bytes still cannot decode the file to wrong data.

  Args:
    header: the header bytes.
    fingerprint: the model's whole fingerprint, a hex string.

  Returns:
    crc32(header, crc32(b"ardm-compact" + the fingerprint's bytes)), the CRC base.

  Raises:
    ValueError: the fingerprint is not a hex string of at least 2 * FINGERPRINT_BYTES digits.
  """
  try:
    fp = bytes.fromhex(fingerprint)
  except (TypeError, ValueError):
    fp = b""
  if len(fp) < FINGERPRINT_BYTES:
    raise ValueError(
      f"fingerprint must be a hex string of at least {2 * FINGERPRINT_BYTES} digits, got {fingerprint!r}"
    )
  return zlib.crc32(header, zlib.crc32(b"ardm-compact" + fp))


def record_crcs(base: int, mode: str, x_BxD: np.ndarray, num_classes: int) -> list[int]:
  """The records' CRC-32s: one over all items (mode 'dataset') or one per item j, keyed by varint(j).

  Args:
    base: the CRC the chain starts from (see the module docstring).
    mode: 'item' or 'dataset'.
    x_BxD: the items' data values, int [B, D].
    num_classes: K (sets the bytes per value).

  Returns:
    The CRCs as ints, one per record.
  """
  if mode == "dataset":
    return [zlib.crc32(_item_bytes(x_BxD, num_classes), base)]
  return [zlib.crc32(_item_bytes(x, num_classes), zlib.crc32(varint_bytes(j), base)) for j, x in enumerate(x_BxD)]


def policy_hash(policy, D: int, num_stages: int = 1) -> bytes:
  """The 4-byte policy check stored in the container.

  Args:
    policy: the global steps, int [P] (checked as by `checks.check_policy`).
    D: variables per item.
    num_stages: S.

  Returns:
    SHA-256(b"ardm-policy" + (S*D) as u64 LE + the steps as u64 LE)[:4]; the stage count itself is a header
    field of its own, so [0, 8, 16] over 3 stages of 8 hashes as over one stage of 24.
  """
  steps = check_policy_steps(policy, D, num_stages)
  h = hashlib.sha256(b"ardm-policy" + int(num_stages * D).to_bytes(8, "little") + steps.astype("<u8").tobytes())
  return h.digest()[:POLICY_HASH_BYTES]


def check_stages(container: Container, num_stages: int) -> None:
  """Checks that the file was coded by a model with `num_stages` stages.

  Args:
    container: the parsed file.
    num_stages: S of the decoding model.

  Raises:
    ContainerError: the file's stage count is not `num_stages`.
  """
  if container.num_stages != num_stages:
    raise ContainerError(
      f"stage mismatch: the file was coded by a {container.num_stages}-stage model, this "
      f"model has {num_stages} stage(s); load the model that made it"
    )


def check_symbols(container: Container, symbols) -> None:
  """Checks that the decoder's symbol model is the file's coding scheme.

  Args:
    container: the parsed file.
    symbols: a symbol model of `entropy_models` (its `name` is compared).

  Raises:
    ContainerError: `symbols` is not the scheme the file was coded with.
  """
  if container.symbols != symbols.name:
    raise ContainerError(
      f"coding scheme mismatch: the file was coded with {container.symbols}, this model "
      f"codes with {symbols.name}; load the model that made it"
    )


def check_policy(container: Container, policy) -> np.ndarray:
  """Checks that `policy` is the global policy the file was coded with (its length and hash).

  Args:
    container: the parsed file.
    policy: the decoder's global steps, int [P].

  Returns:
    The steps as int64 [P].

  Raises:
    ContainerError: the policy is malformed or is not the file's.
  """
  S, D = container.num_stages, container.D
  try:
    steps = check_policy_steps(policy, D, S)
  except ValueError as e:
    raise ContainerError(f"policy for budget {container.budget} is unusable: {e}") from None
  got = policy_hash(steps, D, S)
  if len(steps) != container.budget or got != container.policy_hash:
    raise ContainerError(
      f"policy mismatch: the file used a budget-{container.budget} policy with hash "
      f"{container.policy_hash.hex()}, the given one has {len(steps)} steps and hash "
      f"{got.hex()}"
    )
  return steps


def check_crc(container: Container, x_BxD, num_classes: int) -> None:
  """Checks decoded items against the stored CRCs (call after decoding).

  Args:
    container: the parsed file (a compact one unpacked with `expected_fingerprint`).
    x_BxD: the decoded items, int [N, D].
    num_classes: K.

  Raises:
    ContainerError: wrong shape or a CRC mismatch (a corrupt file or other network numerics).
    ValueError: a compact file read without the model (no CRC base).
  """
  x = np.asarray(x_BxD)
  if x.shape != (container.num_items, container.D):
    raise ContainerError(f"decoded items have shape {x.shape}, the file holds {(container.num_items, container.D)}")
  if container.crc_base is None:
    raise ValueError("a compact file's CRCs need the model: unpack it with expected_fingerprint")
  for j, (want, got) in enumerate(zip(container.crcs, record_crcs(container.crc_base, container.mode, x, num_classes))):
    if want != got:
      where = "the data set" if container.mode == "dataset" else f"item {j}"
      raise ContainerError(f"CRC mismatch for {where}: the file is corrupt or was decoded with other network numerics")
