"""Lossless compression with an ARDM: deterministic probability tables, the coding walk, and the container.

NumPy and constriction only; the network enters as one callable

    predict(x_BxD int32, known_BxD bool, t: int) -> logits float32 [B, D, C]

a single network call for the whole batch at global policy step `t`. A callable with the attribute
`positions_only = True` is called as `predict(x_BxD, known_BxD, t, pos_n)` instead and returns only the logits
of the variables `pos_n` this step codes, float32 [B, n, C]: the same numbers, without holding [B, D, C] (large
data sets of large items, or C = 65,536 for 16-bit audio).

Models and stages
-----------------
A plain OA-ARDM (`stages=None`) codes each variable once: C = K classes, `x_BxD` holds the known values and the
absorbing class K everywhere else, `known_BxD` is `sigma < t` (the same order for every item).

An upscale ARDM (`stages` = any object with NumPy `levels` int [S+1, K] and `slots` int [S, K], such as an
`upscale.Transitions`; duck-typed so this module needs no JAX) codes each variable S times, coarse to fine: level
l = 0..S of data value k is the state `levels[l, k]` (level 0 one absorbing state, level S the data) and stage
s (s = 0..S-1) codes the slot `slots[s, k]` (0..C-1, C = slots.max() + 1) that picks the level-(s+1) state among
the children of the level-s state. Global step g = s * D + t is step t of stage s, with the stage's own order
sigma_s: `x_BxD` holds the level-(s+1) states of the variables with sigma_s < t and the level-s states of all
others, `known_BxD` is `sigma_s < t`, and predict is called with `t = g` (what the network's step input is
trained on). It returns logits over the C slots of each coded variable (-inf for empty slots is fine). A plain
OA-ARDM is the one-stage case with levels [[K]*K, 0..K-1] and slots [0..K-1]; both paths give the same bits.

Orders: sigma_s = `stage_orders(seed, D, S)[s]`; the keys of stage s are SplitMix64 outputs s*D+1 .. (s+1)*D of
the seed's stream, so stage 0 is `order_from_seed(seed, D)` (the order of one-stage files) and later stages
continue the same stream (independent orders, nothing else stored).

Symbol models (ardm_jax/entropy_models.py)
------------------------------------------
`predict` returns, per coded variable, the parameters of a symbol model (`symbols=`): by default
`CategoricalTables(C)`, C logits per variable turned into one integer table each (below); for the discretised
logistic mixture of 16-bit audio `MixtureSplits(K, M)`, its 3 M unpacked parameters, each value coded as
ceil(log2 K) binary decisions from the mixture's CDF at three bin edges (no K-wide table is ever built).
`quantise_counts` turns float32 logits into integer counts c_k >= 1 with sum 2**24 (softmax in float64 with a
fixed formula and a sequential sum; every class gets 1 + floor(p_k * (2**24 - C)) and the rounding residual goes
to the first most probable class). The coder hands constriction's lazy categorical model the weights c_k - 1:
they are integers summing to exactly 2**24 - C, so its fast quantiser (left cumulative = floor(cumsum * scale)
+ index, with scale exactly 1.0) reproduces c_k bit for bit, whatever float width it computes in. Encoder and
decoder therefore share a table whenever they see bit-identical logits, and no class is ever unencodable
(an empty slot keeps a count of 1, so a decoder that lands on one reports a corrupt payload). Tables are
quantised and coded in chunks of at most 2**21 entries (32 rows for C = 65,536), so the float64 work arrays stay
small; rows are independent, so chunking changes no bit. The decoder must see the same network numerics as the
encoder: same model, same batch of items (per-item streams are decoded together, as they were encoded), same
device kind and the same NumPy `exp`; the CRC turns any mismatch into an error instead of wrong data.

Coding walk
-----------
ANS is a stack. A global policy is an increasing array of global steps g_0 = 0 < g_1 < ... < g_{P-1} < S * D
containing every stage start s * D (for S = 1 an ordinary policy over D steps). Encoding walks it backwards
(k = P-1 .. 0): one `predict` call, then the slots of the variables with sigma_s in [t_k, end_k) are pushed in
the canonical order (item-major, then sigma_s ascending) with `encode_reverse`, so the decoder, walking forwards
with the same calls and moving every decoded variable to the child in its slot, pops them in that same
canonical order. Each direction makes exactly len(policy) network calls. A stream costs its quantised NLL plus
about 15-25 bits (the ANS state left by the first symbols pushed), so per-item streams pay that once per item
and a data-set stream once in all. A decoder must end with an empty coder, which rejects most corrupt payloads
before the CRC is consulted.

Container (integers little-endian; varint = unsigned LEB128, shortest form only)
--------------------------------------------------------------------------------
Version 1 holds files of one-stage models (every plain OA-ARDM): its bytes are exactly those of the first
release. Version 2 is written only for S >= 2 stages and adds one field, `stages`.

    field          bytes     meaning
    magic          2         b"AR"
    version        1         1 (S = 1) or 2 (S >= 2)
    flags          1         bit 0: mode (0 per item, 1 per data set); bits 1-2: kind (0 image, 1 text,
                             2 audio); bit 3: a file table follows the order seed; bit 4: variables coded
                             by binary splits of a mixture (0: tables; files before splits existed); bits 5-7 zero
    fingerprint    4         first 4 bytes of the model fingerprint (parameters + config hash)
    ndim           varint    number of item dimensions (1..8)
    shape          varint*   each item dimension (>= 1); D = product
    num_items      varint    N >= 1
    stages         varint    version 2 only: S (2..64)
    budget         varint    number of global policy steps P (1..S*D)
    policy hash    4         SHA-256(b"ardm-policy" + (S*D) as u64 + global steps as u64s)[:4], see `policy_hash`
    order seed     varint    sigma_s = stage_orders(seed, D, S)[s] (for S = 1: order_from_seed(seed, D))
    file table     varint + bytes, only with flag bit 3: length (>= 1) then opaque bytes for the caller
                   (how items map back to files; see ardm_jax/compress.py). Absent, it costs nothing.
    -- everything above is the "header"; then the records --
    per data set:  crc32 (4) + length (varint) + payload          one ANS stream for all N items
    per item:      N x [crc32 (4) + length (varint) + payload]    one ANS stream per item, item order

The decoder takes the policy itself from the model's workdir (the policy for `budget`) and checks it against the
stored hash, and the stage count against the model's. A payload is constriction's uint32 words as little-endian
bytes with up to 3 trailing zero bytes dropped (restored by zero-padding to a multiple of 4). Each CRC-32 covers
the header and the original items (data values, not states), so a corrupted header that still parses cannot
pass either: per data set crc32(items, crc32(header)); per item j crc32(item_j, crc32(varint(j),
crc32(header))). Items are hashed as their flattened values in uint8 (K <= 256), uint16 LE (K <= 65536) or
uint32 LE. `unpack_container(max_symbols=...)` caps the coded symbols N * S * D before decoding; a corrupt count
below the cap is still caught (coder not empty or CRC) but only after decoding that many symbols, so callers
should pass a tight cap.

Compact container (version 3; what `ardm compress` writes)
---------------------------------------------------------
Everything the decoder's model implies is left out unless it differs:

    field          bytes     meaning
    magic          1         0xA3 (older files start with b"AR")
    flags          1         bit 0 mode; bits 1-2 kind; bit 3 file table; bit 4 splits (as above); bit 5 shape
                             stored; bit 6 policy stored; bit 7 order seed and item count stored
    fingerprint    2         first 2 bytes of the model fingerprint
    shape          varint ndim + varint dims, only with bit 5 (else the model's item shape)
    policy         varint budget P (1..S*D-1) + 4-byte policy hash, only with bit 6 (else one call per variable and
                   stage: P = S * D, the only policy of that budget)
    seed, count    only with bit 7 (else seed 0 and N = 1): varint (seed << 1 | [N > 1]), then varint N if N > 1
    file table     as in version 1, only with bit 3
    records        per item: crc32 (4) + length varint + payload, the last record without its length (it runs to
                   the end of the file); per data set: crc32 (4) + payload

S is the model's stage count (not stored). The CRCs start from crc32(header, crc32(b"ardm-compact" + the whole
fingerprint)), so a model that shares the 2 stored bytes still cannot decode a file to wrong data, and a flipped
flag changes the header they cover. A single item with the defaults costs 8 bytes (4 header + 4 CRC) plus its
payload.

Fixed cost of a single 8x8x1 digits image in per-item mode in version 1 (seed, budget and payload length < 128):
header 19 bytes (2 + 1 + 1 + 4 + 4 shape + 1 + 1 + 4 + 1) + record 5 bytes (4 crc + 1 length) = 24 bytes;
an upscale model's file adds 1 byte (the stage count), and a budget of 128..16383 one more.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
import dataclasses
import hashlib
import zlib

import constriction
import numpy as np

from ardm_jax.entropy_models import (  # noqa: F401  (the quantisers stay importable from here)
  CHUNK_ENTRIES,
  PRECISION,
  CategoricalTables,
  CorruptPayload,
  MixtureSplits,
  quantise_counts,
  quantise_probs,
)

MAGIC = b"AR"
FORMAT_VERSION = 1  # one-stage models: unchanged since the first release, so those files stay identical
STAGED_FORMAT_VERSION = 2  # S >= 2 stages: version 1 plus the stage count
COMPACT_FORMAT_VERSION = 3  # what the model implies is left out (see "Compact container")
FORMAT_VERSIONS = (FORMAT_VERSION, STAGED_FORMAT_VERSION, COMPACT_FORMAT_VERSION)
COMPACT_MAGIC = 0xA3  # the first byte of a compact file; older files start with b"AR"
COMPACT_FINGERPRINT_BYTES = 2
MODES = ("item", "dataset")
KINDS = ("image", "text", "audio")
SYMBOL_MODELS = ("tables", "splits")  # flag bit 4: how the variables were coded (entropy_models)
FINGERPRINT_BYTES = 4
POLICY_HASH_BYTES = 4
MAX_NDIM = 8
MAX_STAGES = 64  # digit transitions of K <= 2**24 with b = 2 need 24; anything far above is a corrupt header
MAX_SYMBOLS = 1 << 31  # N * S * D above this is rejected before anything is allocated

Predict = Callable[..., np.ndarray]
PolicySource = Sequence[int] | np.ndarray | Callable[[int, int], Sequence[int]]


class ContainerError(ValueError):
  """A compressed file that is malformed, corrupt, truncated or made for another model."""


# --------------------------------------------------------------------------------------------------------------
# Probability tables


# --------------------------------------------------------------------------------------------------------------
# Stages (what the walk needs of an upscale model's transitions)


@dataclasses.dataclass(frozen=True, eq=False)
class _Stages:
  levels: np.ndarray  # int64 [S+1, K]
  slots: np.ndarray  # int64 [S, K]
  num_slots: int  # C
  child_keys: tuple  # per stage: sorted coarse * C + slot of every existing child
  child_states: tuple  # per stage: the child state of each key

  @property
  def num_stages(self) -> int:
    return self.slots.shape[0]

  def child(self, stage: int, coarse: np.ndarray, slot: np.ndarray) -> np.ndarray:
    """The level-(s+1) state in `slot` of each level-s state `coarse`; -1 where that slot is empty."""
    keys = self.child_keys[stage]
    key = coarse.astype(np.int64) * self.num_slots + slot.astype(np.int64)
    i = np.minimum(np.searchsorted(keys, key), len(keys) - 1)
    return np.where(keys[i] == key, self.child_states[stage][i], -1)


def _stages(stages, num_classes: int) -> _Stages:
  """Checks and indexes `stages` (None: the plain OA-ARDM, absorbing class K, slots = classes)."""
  K = _check_num_classes(num_classes)
  if stages is None:
    levels, slots = np.stack([np.full(K, K), np.arange(K)]), np.arange(K)[None]
  else:
    levels, slots = np.asarray(getattr(stages, "levels", None)), np.asarray(getattr(stages, "slots", None))
    ok = (
      levels.ndim == 2
      and np.issubdtype(levels.dtype, np.integer)
      and levels.shape[1] == K
      and 2 <= levels.shape[0] <= MAX_STAGES + 1
      and np.issubdtype(slots.dtype, np.integer)
      and slots.shape == (levels.shape[0] - 1, K)
    )
    if not ok:
      raise ValueError(
        f"stages must have integer levels [S+1, K={K}] and slots [S, K] with 1 <= S <= "
        f"{MAX_STAGES}, got {levels.shape} and {slots.shape}; pass an upscale.Transitions"
      )
    if (
      levels.min() < 0
      or slots.min() < 0
      or not np.array_equal(levels[-1], np.arange(K))
      or np.unique(levels[0]).size != 1
    ):
      raise ValueError(
        "stages must have non-negative states and slots, one absorbing state at level 0 and "
        "the data itself at level S; pass an upscale.Transitions"
      )
  levels, slots = levels.astype(np.int64), slots.astype(np.int64)
  C = int(slots.max()) + 1
  if C < 2 or C >= (1 << PRECISION) - 1:
    raise ValueError(f"stages must use 2 .. 2**24 - 2 slots, got {C}")
  child_keys, child_states = [], []
  for s in range(slots.shape[0]):
    key = levels[s] * C + slots[s]
    order = np.argsort(key, kind="stable")
    key, fine = key[order], levels[s + 1][order]
    dup = np.flatnonzero(np.diff(key) == 0)
    if np.any(fine[dup] != fine[dup + 1]):  # the decoder could not tell which child a slot means
      raise ValueError(
        f"stage {s}: one (coarse state, slot) pair leads to two different states; levels and "
        "slots must form a tree (build them with ardm_jax.upscale)"
      )
    keep = np.append(True, np.diff(key) != 0)
    child_keys.append(key[keep])
    child_states.append(fine[keep])
  return _Stages(levels, slots, C, tuple(child_keys), tuple(child_states))


def num_stages_of(stages) -> int:
  """S of a `stages` argument (1 for None)."""
  if stages is None:
    return 1
  slots = np.asarray(getattr(stages, "slots", None))
  if slots.ndim != 2:
    raise ValueError("stages must have integer slots [S, K] (and levels [S+1, K]); pass an upscale.Transitions")
  return int(slots.shape[0])


# --------------------------------------------------------------------------------------------------------------
# Orders and policies


def _splitmix_keys(seed: int, first: int, D: int) -> np.ndarray:
  """SplitMix64 outputs first+1 .. first+D of the stream of `seed` (exact uint64 arithmetic)."""
  with np.errstate(over="ignore"):
    index = np.arange(first + 1, first + D + 1, dtype=np.uint64)
    z = np.uint64(seed) + index * np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def _ranks(keys: np.ndarray) -> np.ndarray:
  sigma = np.empty(keys.size, np.int32)
  sigma[np.argsort(keys, kind="stable")] = np.arange(keys.size, dtype=np.int32)
  return sigma


def order_from_seed(seed: int, D: int) -> np.ndarray:
  """sigma_D (int32): sigma[i] = generation step of variable i, a deterministic function of (seed, D).

  Variables are ranked by SplitMix64(seed, i) keys (all distinct); only exact uint64 arithmetic is involved,
  so the order is the same on every platform and NumPy version.
  """
  seed, D = _check_uint(seed, "order seed", 1 << 64), _check_uint(D, "D", MAX_SYMBOLS + 1)
  if D < 1:
    raise ValueError("D must be >= 1")
  return _ranks(_splitmix_keys(seed, 0, D))


def stage_orders(seed: int, D: int, num_stages: int = 1) -> np.ndarray:
  """sigma_SxD (int32): stage s ranks SplitMix64 outputs s*D+1 .. (s+1)*D of the seed's stream.

  Stage 0 is `order_from_seed(seed, D)`, so one-stage files keep their order; the stages' keys are distinct
  draws of one stream, so the orders are independent.
  """
  seed, D = _check_uint(seed, "order seed", 1 << 64), _check_uint(D, "D", MAX_SYMBOLS + 1)
  S = _check_uint(num_stages, "num_stages", MAX_STAGES + 1)
  if D < 1 or S < 1:
    raise ValueError(f"D and num_stages must be >= 1, got {D} and {S}")
  return np.stack([_ranks(_splitmix_keys(seed, s * D, D)) for s in range(S)])


def _check_uint(v, what: str, bound: int) -> int:
  if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)) or not 0 <= int(v) < bound:
    raise ValueError(f"{what} must be an integer in [0, {bound}), got {v!r}")
  return int(v)


def _check_policy(policy, D: int, num_stages: int = 1) -> np.ndarray:
  steps = np.asarray(policy)
  if steps.ndim != 1 or steps.size == 0 or not np.issubdtype(steps.dtype, np.integer):
    raise ValueError(f"a policy must be a non-empty 1-D list of integer step starts, got {policy!r}")
  steps = steps.astype(np.int64)
  total = num_stages * D
  if steps[0] != 0 or np.any(np.diff(steps) <= 0) or steps[-1] >= total:
    if num_stages == 1:
      raise ValueError(f"a policy must start at 0 and strictly increase below D={D}, got {steps.tolist()}")
    raise ValueError(
      f"a policy for {num_stages} stages of D={D} steps must start at 0 and strictly increase "
      f"below S*D={total}, got {steps[:8].tolist()}{' ...' if steps.size > 8 else ''}"
    )
  missing = np.setdiff1d(np.arange(0, total, D), steps)
  if missing.size:
    raise ValueError(
      f"a policy for {num_stages} stages of D={D} steps must contain every stage start s*D; "
      f"missing {missing[:5].tolist()}; build it with upscale.flatten_policies"
    )
  return steps


def _check_sigmas(sigma, D: int, num_stages: int = 1) -> np.ndarray:
  """[S, D] int64 orders; a single [D] order is accepted for S = 1."""
  a = np.asarray(sigma)
  if num_stages == 1 and a.ndim == 1:
    a = a[None]
  if a.ndim != 2 or a.shape[0] != num_stages or not np.issubdtype(a.dtype, np.integer) or a.shape[1] != D:
    want = f"[D] = [{D}]" if num_stages == 1 else f"[S, D] = [{num_stages}, {D}]"
    raise ValueError(
      f"sigma must be integer orders of shape {want}, got shape {a.shape}; use "
      f"{'order_from_seed(seed, D)' if num_stages == 1 else 'stage_orders(seed, D, S)'}"
    )
  if not np.array_equal(np.sort(a, axis=1), np.broadcast_to(np.arange(D), a.shape)):
    raise ValueError("sigma must be a permutation of 0..D-1 per stage; use order_from_seed / stage_orders")
  return a.astype(np.int64)


def policy_hash(policy, D: int, num_stages: int = 1) -> bytes:
  """The 4-byte policy check stored in the container: SHA-256 over S * D and the global steps."""
  steps = _check_policy(policy, D, num_stages)
  h = hashlib.sha256(b"ardm-policy" + int(num_stages * D).to_bytes(8, "little") + steps.astype("<u8").tobytes())
  return h.digest()[:POLICY_HASH_BYTES]


def _plan(sigma_SxD: np.ndarray, steps: np.ndarray, D: int) -> list[tuple[int, int, int, np.ndarray]]:
  """Per global policy step: (stage s, start t, global step g, the variables it codes in sigma_s order)."""
  by_stage = [np.argsort(sigma, kind="stable") for sigma in sigma_SxD]
  ends = np.append(steps[1:], sigma_SxD.shape[0] * D)
  plan = []
  for g, e in zip(steps.tolist(), ends.tolist()):
    s = g // D
    plan.append((s, g - s * D, g, by_stage[s][g - s * D : e - s * D]))
  return plan


# --------------------------------------------------------------------------------------------------------------
# The coding walk


def _step_params(
  predict: Predict, x_in_BxD: np.ndarray, known_D: np.ndarray, t: int, pos: np.ndarray, width: int
) -> np.ndarray:
  """One network call at global step t; float parameters [B, len(pos), W] of the variables `pos` of this step."""
  return _start_step(predict, x_in_BxD, known_D, t, pos, width)()


def _start_step(predict: Predict, x_in_BxD: np.ndarray, known_D: np.ndarray, t: int, pos: np.ndarray, width: int):
  """Starts the network call of a step; returns a function that waits for its checked parameters. A predict with
  a `dispatch` method (positions only) starts device work at once; any other is called when the result is asked."""
  B, D = x_in_BxD.shape
  known_BxD = np.broadcast_to(known_D, (B, D)).copy()
  if getattr(predict, "positions_only", False) and hasattr(predict, "dispatch"):
    pending = predict.dispatch(x_in_BxD.astype(np.int32), known_BxD, int(t), pos)
    return lambda: _checked_params(np.asarray(pending()), (B, len(pos), width))
  if getattr(predict, "positions_only", False):
    return lambda: _checked_params(
      np.asarray(predict(x_in_BxD.astype(np.int32), known_BxD, int(t), pos)), (B, len(pos), width)
    )
  return lambda: _checked_params(np.asarray(predict(x_in_BxD.astype(np.int32), known_BxD, int(t))), (B, D, width), pos)


def _checked_params(out: np.ndarray, want: tuple, pos: np.ndarray | None = None) -> np.ndarray:
  """`out` checked against the shape `want`; a full [B, D, W] output (`pos` given) cut to the positions `pos`."""
  if out.shape != want:
    raise ValueError(f"predict must return logits of shape {want}, got {out.shape}")
  if out.dtype not in (np.float32, np.float64):
    raise ValueError(f"predict must return float32 logits, got {out.dtype}")
  if pos is not None:
    out = out[:, pos, :]
  return np.ascontiguousarray(out)


def _check_items(x_BxD, num_classes: int) -> np.ndarray:
  x = np.asarray(x_BxD)
  if x.ndim != 2 or x.shape[0] < 1 or x.shape[1] < 1 or not np.issubdtype(x.dtype, np.integer):
    raise ValueError(f"items must be an integer array [B, D] with B, D >= 1, got {x.dtype} {x.shape}")
  _check_num_classes(num_classes)
  if x.min() < 0 or x.max() >= num_classes:
    raise ValueError(f"item values must lie in 0..{num_classes - 1}, got {x.min()}..{x.max()}")
  return x.astype(np.int32)


def _check_num_classes(num_classes) -> int:
  if (
    isinstance(num_classes, (bool, np.bool_))
    or not isinstance(num_classes, (int, np.integer))
    or not 2 <= num_classes < (1 << PRECISION) - 1
  ):
    raise ValueError(f"num_classes must be an integer in [2, 2**24 - 1), got {num_classes!r}")
  return int(num_classes)


def _symbols(symbols, st: _Stages):
  """The symbol model (default: tables over the slots); a mixture's splits only fit one stage over K classes."""
  if symbols is None:
    return CategoricalTables(st.num_slots)
  if not isinstance(symbols, (CategoricalTables, MixtureSplits)):
    raise ValueError(f"symbols must be an entropy_models.CategoricalTables or MixtureSplits, got {symbols!r}")
  if symbols.num_classes != st.num_slots:
    raise ValueError(
      f"the symbol model codes {symbols.num_classes} classes but the model has {st.num_slots} slots per variable"
    )
  return symbols


def _walk_known(predict: Predict, x_BxD, sigma, policy, num_classes: int, reverse: bool, stages=None, symbols=None):
  """Yields (slots [B, n], params [B, n, W]) per global policy step for fully known items, one call each."""
  st = _stages(stages, num_classes)
  sym_model = _symbols(symbols, st)
  x = _check_items(x_BxD, num_classes)
  D = x.shape[1]
  sigma = _check_sigmas(sigma, D, st.num_stages)
  steps = _check_policy(policy, D, st.num_stages)
  plan = _plan(sigma, steps, D)

  def start(k):
    s, t, g, pos = plan[k]
    known_D = sigma[s] < t
    # Refined in this stage: the level-(s+1) state; all others still hold their level-s state.
    x_in = np.where(known_D[None, :], st.levels[s + 1][x], st.levels[s][x])
    return st.slots[s][x[:, pos]], _start_step(predict, x_in, known_D, g, pos, sym_model.width)

  # The items are known, so every step's input is too: step k + 1 is started before step k is coded.
  order = list(range(len(plan) - 1, -1, -1) if reverse else range(len(plan)))
  pending = start(order[0])
  for i in range(len(order)):
    nxt = start(order[i + 1]) if i + 1 < len(order) else None
    sym, result = pending
    yield sym, result()
    pending = nxt


def nll_bits(predict: Predict, x_BxD, sigma, policy, num_classes: int, stages=None, symbols=None) -> np.ndarray:
  """Per item, the bits the coder pays under its quantised tables / splits (before ANS overhead), float64 [B]."""
  sym_model = _symbols(symbols, _stages(stages, num_classes))
  total = 0.0
  for sym_Bxn, params in _walk_known(
    predict, x_BxD, sigma, policy, num_classes, reverse=False, stages=stages, symbols=sym_model
  ):
    total = total + sym_model.code_bits(params, sym_Bxn).sum(axis=1)
  return np.asarray(total, np.float64)


def _words_to_bytes(words: np.ndarray) -> bytes:
  b = np.asarray(words, dtype="<u4").tobytes()
  n = len(b)
  while n > len(b) - 3 and n > 0 and b[n - 1] == 0:  # the top word's high zero bytes carry nothing
    n -= 1
  return b[:n]


def _bytes_to_words(payload: bytes) -> np.ndarray:
  b = bytes(payload) + b"\0" * (-len(payload) % 4)
  return np.frombuffer(b, dtype="<u4").astype(np.uint32)


def _encode(predict: Predict, x_BxD, sigma, policy, num_classes: int, stages, symbols, per_item: bool) -> list:
  st = _stages(stages, num_classes)
  sym_model = _symbols(symbols, st)
  B = np.asarray(x_BxD).shape[0]
  coders = [constriction.stream.stack.AnsCoder() for _ in range(B if per_item else 1)]
  for sym_Bxn, params in _walk_known(
    predict, x_BxD, sigma, policy, num_classes, reverse=True, stages=stages, symbols=sym_model
  ):
    if not per_item:  # one stream: the items' variables one after the other
      sym_Bxn, params = sym_Bxn.reshape(1, -1), params.reshape(1, -1, params.shape[-1])
    sym_model.push(coders, sym_Bxn, params)
  return [_words_to_bytes(coder.get_compressed()) for coder in coders]


def encode_stream(predict: Predict, x_BxD, sigma, policy, num_classes: int, stages=None, symbols=None) -> bytes:
  """Per data set mode: one ANS stream for all B items; len(policy) network calls."""
  return _encode(predict, x_BxD, sigma, policy, num_classes, stages, symbols, per_item=False)[0]


def encode_items(predict: Predict, x_BxD, sigma, policy, num_classes: int, stages=None, symbols=None) -> list[bytes]:
  """Per item mode: one ANS stream per item (network calls still batched: len(policy) in total)."""
  return _encode(predict, x_BxD, sigma, policy, num_classes, stages, symbols, per_item=True)


def _decode_walk(
  predict: Predict, coders: list, sigma, policy, num_items: int, D: int, num_classes: int, stages=None, symbols=None
):
  """Forward walk shared by both decoders: one stream (one coder) or one per item."""
  st = _stages(stages, num_classes)
  sym_model = _symbols(symbols, st)
  num_items, D = _check_uint(num_items, "num_items", 1 << 64), _check_uint(D, "D", 1 << 64)
  if num_items < 1 or D < 1 or num_items * D * st.num_stages > MAX_SYMBOLS:
    raise ContainerError(f"implausible size: {num_items} items of {D} variables; the file is corrupt")
  sigma = _check_sigmas(sigma, D, st.num_stages)
  steps = _check_policy(policy, D, st.num_stages)
  state = np.full((num_items, D), st.levels[0, 0], np.int64)  # everything starts absorbed
  for s, t, g, pos in _plan(sigma, steps, D):
    params = _step_params(predict, state, sigma[s] < t, g, pos, sym_model.width)
    try:
      if len(coders) == 1 and num_items > 1:
        sym = sym_model.pop(coders, params.reshape(1, -1, params.shape[-1])).reshape(num_items, len(pos))
      else:
        sym = sym_model.pop(coders, params)
    except CorruptPayload as e:
      raise ContainerError(str(e)) from None
    if sym.shape != (num_items, len(pos)) or sym.min(initial=0) < 0 or sym.max(initial=0) >= st.num_slots:
      raise ContainerError("payload is corrupt (decoded symbols out of range)")
    fine = st.child(s, state[:, pos], sym)
    if fine.min(initial=0) < 0:
      raise ContainerError("payload is corrupt (decoded an empty slot)")
    state[:, pos] = fine
  return state.astype(np.int32)  # level S: the data values 0..K-1


def _open_coder(payload) -> constriction.stream.stack.AnsCoder:
  if not isinstance(payload, (bytes, bytearray, memoryview)):
    raise ValueError(f"a payload must be bytes, got {type(payload).__name__}")
  try:
    return constriction.stream.stack.AnsCoder(_bytes_to_words(payload))
  except Exception as e:
    raise ContainerError(f"payload is corrupt ({type(e).__name__}: {e})") from None


def _require_empty(coders) -> None:
  if not all(c.is_empty() for c in coders):
    raise ContainerError("payload is corrupt (data left over after the last symbol)")


def decode_stream(
  predict: Predict, payload: bytes, sigma, policy, num_items: int, D: int, num_classes: int, stages=None, symbols=None
) -> np.ndarray:
  """Inverse of `encode_stream`: x_BxD int32; len(policy) network calls. Corruption -> ContainerError."""
  coders = [_open_coder(payload)]
  x = _decode_walk(predict, coders, sigma, policy, num_items, D, num_classes, stages, symbols)
  _require_empty(coders)
  return x


def decode_items(
  predict: Predict,
  payloads: Sequence[bytes],
  sigma,
  policy,
  num_items: int,
  D: int,
  num_classes: int,
  stages=None,
  symbols=None,
) -> np.ndarray:
  """Inverse of `encode_items` (all items decoded together, as encoded); len(policy) network calls."""
  if len(payloads) != num_items:
    raise ContainerError(f"expected {num_items} item payloads, got {len(payloads)}")
  coders = [_open_coder(p) for p in payloads]
  x = _decode_walk(predict, coders, sigma, policy, num_items, D, num_classes, stages, symbols)
  _require_empty(coders)
  return x


# --------------------------------------------------------------------------------------------------------------
# Container


@dataclasses.dataclass(frozen=True)
class Container:
  """A parsed container; `header` is the byte prefix the CRCs cover."""

  version: int
  mode: str
  fingerprint: str  # hex of the stored truncation
  kind: str
  item_shape: tuple
  num_items: int
  budget: int
  policy_hash: bytes
  order_seed: int
  crcs: tuple
  payloads: tuple
  header: bytes
  file_table: bytes = b""  # opaque caller bytes (flag bit 3); b"" when absent
  num_stages: int = 1  # S; stored only in version 2 files
  symbols: str = "tables"  # how variables were coded: 'tables' or 'splits' (flag bit 4), see entropy_models
  crc_base: int | None = None  # what the records' CRCs continue from (None: compact file read without the model)

  @property
  def D(self) -> int:
    return int(np.prod(self.item_shape))


def varint_bytes(v: int) -> bytes:
  """Unsigned LEB128, the container's integer encoding (shortest form)."""
  out = bytearray()
  while True:
    b, v = v & 0x7F, v >> 7
    out.append(b | (0x80 if v else 0))
    if not v:
      return bytes(out)


class _Reader:
  def __init__(self, data: bytes):
    self.data, self.pos = data, 0

  def take(self, n: int, what: str) -> bytes:
    if n > len(self.data) - self.pos:
      raise ContainerError(
        f"truncated file: {what} needs {n} bytes at offset {self.pos}, only {len(self.data) - self.pos} left"
      )
    out = self.data[self.pos : self.pos + n]
    self.pos += n
    return out

  def varint(self, what: str) -> int:
    value = 0
    for i in range(10):
      b = self.take(1, what)[0]
      value |= (b & 0x7F) << (7 * i)
      if not b & 0x80:
        if (b == 0 and i > 0) or value >= 1 << 64:
          raise ContainerError(f"corrupt header: malformed varint for {what}")
        return value
    raise ContainerError(f"corrupt header: varint for {what} is too long")


def _read_tail(r: _Reader, data: bytes, flags: int, n_records: int, last_length_implied: bool):
  """The optional file table (flag bit 3) and the records: (file table, header bytes, crcs, payloads). Each record
  is crc32 + length varint + payload; a compact file's last record has no length (it runs to the end)."""
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


def _read_shape(r: _Reader, max_symbols: int) -> tuple:
  """ndim then the dimensions, each checked before the next is read."""
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


def _fingerprint_bytes(fingerprint: str, what: str) -> bytes:
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


def _compact_crc_base(header: bytes, fingerprint: str) -> int:
  """Compact files store 2 fingerprint bytes; their CRCs also cover the model's whole fingerprint, so another
  model that shares those bytes still cannot decode them to wrong data."""
  try:
    fp = bytes.fromhex(fingerprint)
  except (TypeError, ValueError):
    fp = b""
  if len(fp) < FINGERPRINT_BYTES:
    raise ValueError(
      f"fingerprint must be a hex string of at least {2 * FINGERPRINT_BYTES} digits, got {fingerprint!r}"
    )
  return zlib.crc32(header, zlib.crc32(b"ardm-compact" + fp))


def _crcs(base: int, mode: str, x_BxD: np.ndarray, num_classes: int) -> list[int]:
  if mode == "dataset":
    return [zlib.crc32(_item_bytes(x_BxD, num_classes), base)]
  return [zlib.crc32(_item_bytes(x, num_classes), zlib.crc32(varint_bytes(j), base)) for j, x in enumerate(x_BxD)]


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
  """Builds a container around coded payloads (one for mode 'dataset', one per item for mode 'item').

  `x_BxD` are the original items (flattened), needed for the CRCs; `fingerprint` the model's full hex
  fingerprint (its first 4 bytes are stored); `file_table` optional caller bytes kept in the header;
  `num_stages` the model's S (version 1 for S = 1, version 2 otherwise); `symbols` the symbol model's name.
  `compact`: version 3, leaving out what the model implies (`implied_shape`: the model's item shape).
  """
  if symbols not in SYMBOL_MODELS:
    raise ValueError(f"symbols must be one of {SYMBOL_MODELS}, got {symbols!r}")
  if not isinstance(file_table, (bytes, bytearray)):
    raise ValueError(f"file_table must be bytes, got {type(file_table).__name__}")
  if mode not in MODES or kind not in KINDS:
    raise ValueError(f"mode must be one of {MODES} and kind one of {KINDS}, got {mode!r}, {kind!r}")
  S = _check_uint(num_stages, "num_stages", MAX_STAGES + 1)
  if S < 1:
    raise ValueError(f"num_stages must be in 1..{MAX_STAGES}, got {num_stages}")
  shape = tuple(int(d) for d in item_shape)
  if not 1 <= len(shape) <= MAX_NDIM or min(shape) < 1:
    raise ValueError(f"item_shape must have 1..{MAX_NDIM} dimensions, each >= 1, got {item_shape!r}")
  D = int(np.prod(shape))
  x = _check_items(x_BxD, num_classes)
  if x.shape[1] != D or x.shape[0] * D * S > MAX_SYMBOLS:
    raise ValueError(f"items of shape {x.shape} do not match item_shape {shape} (D = {D}), or are too many")
  steps = _check_policy(policy, D, S)
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
      _fingerprint_bytes(fingerprint, "fingerprint"),
      varint_bytes(len(shape)),
      *[varint_bytes(d) for d in shape],
      varint_bytes(x.shape[0]),
      varint_bytes(S) if S > 1 else b"",
      varint_bytes(len(steps)),
      policy_hash(steps, D, S),
      varint_bytes(_check_uint(order_seed, "order seed", 1 << 64)),
      varint_bytes(len(file_table)) + bytes(file_table) if file_table else b"",
    ]
  )
  records = [
    crc.to_bytes(4, "little") + varint_bytes(len(p)) + bytes(p)
    for crc, p in zip(_crcs(zlib.crc32(header), mode, x, num_classes), payloads)
  ]
  return header + b"".join(records)


def _pack_compact(
  payloads, x, *, mode, fingerprint, kind, shape, implied_shape, steps, S, order_seed, num_classes, file_table, symbols
) -> bytes:
  D = int(np.prod(shape))
  store_shape = implied_shape is None or tuple(int(d) for d in implied_shape) != shape
  store_policy = len(steps) != S * D  # one call per variable and stage is the only policy of budget S * D
  seed = _check_uint(order_seed, "order seed", 1 << 64)
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
      _fingerprint_bytes(fingerprint, "fingerprint")[:COMPACT_FINGERPRINT_BYTES],
      varint_bytes(len(shape)) + b"".join(varint_bytes(d) for d in shape) if store_shape else b"",
      varint_bytes(len(steps)) + policy_hash(steps, D, S) if store_policy else b"",
      # The seed and whether more than one item follows share a varint: a searched seed of one item costs 1 byte.
      varint_bytes((seed << 1) | (x.shape[0] > 1)) + (varint_bytes(x.shape[0]) if x.shape[0] > 1 else b"")
      if store_count
      else b"",
      varint_bytes(len(file_table)) + file_table if file_table else b"",
    ]
  )
  crcs = _crcs(_compact_crc_base(header, fingerprint), mode, x, num_classes)
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
  """Parses and checks a container; raises ContainerError naming the problem.

  `expected_fingerprint=None` skips the model check (only for inspecting headers). Nothing proportional to
  the claimed sizes is allocated before they have been checked against the file length / `max_symbols`
  (which bounds the coded symbols N * S * D). A compact file takes what it leaves out from the model:
  `expected_shape` (its item shape) and `num_stages` (its S).
  """
  if not isinstance(data, (bytes, bytearray, memoryview)):
    raise ValueError(f"container data must be bytes, got {type(data).__name__}")
  data = bytes(data)
  r = _Reader(data)
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
    want = _fingerprint_bytes(expected_fingerprint, "expected_fingerprint")
    if fp != want:
      raise ContainerError(
        f"model fingerprint mismatch: the file was made with model {fp.hex()}, "
        f"this model is {want.hex()}; load the model that made it"
      )
  shape = _read_shape(r, max_symbols)
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
  file_table, header, crcs, payloads = _read_tail(
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
  r = _Reader(data)
  r.take(1, "magic")
  flags = r.take(1, "flags")[0]
  if (flags >> 1) & 3 >= len(KINDS):
    raise ContainerError(f"corrupt header: unknown flag bits 0x{flags:02x}")
  mode, kind = MODES[flags & 1], KINDS[(flags >> 1) & 3]
  fp = r.take(COMPACT_FINGERPRINT_BYTES, "fingerprint")
  if expected_fingerprint is not None:
    want = _fingerprint_bytes(expected_fingerprint, "expected_fingerprint")[:COMPACT_FINGERPRINT_BYTES]
    if fp != want:
      raise ContainerError(
        f"model fingerprint mismatch: the file was made with model {fp.hex()}..., "
        f"this model is {want.hex()}...; load the model that made it"
      )
  S = _check_uint(S, "num_stages", MAX_STAGES + 1)
  if flags & 32:
    shape = _read_shape(r, max_symbols)
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
  file_table, header, crcs, payloads = _read_tail(
    r, data, flags, 1 if mode == "dataset" else num_items, last_length_implied=True
  )
  if expected_shape is not None and shape != tuple(expected_shape):
    raise ContainerError(f"item shape {shape} in the file does not match the model's {tuple(expected_shape)}")
  base = None if expected_fingerprint is None else _compact_crc_base(header, expected_fingerprint)
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


def check_stages(container: Container, num_stages: int) -> None:
  """Raises ContainerError unless the file was coded by a model with `num_stages` stages."""
  if container.num_stages != num_stages:
    raise ContainerError(
      f"stage mismatch: the file was coded by a {container.num_stages}-stage model, this "
      f"model has {num_stages} stage(s); load the model that made it"
    )


def check_symbols(container: Container, symbols) -> None:
  """Raises ContainerError unless `symbols` (a symbol model) is the scheme the file was coded with."""
  if container.symbols != symbols.name:
    raise ContainerError(
      f"coding scheme mismatch: the file was coded with {container.symbols}, this model "
      f"codes with {symbols.name}; load the model that made it"
    )


def check_policy(container: Container, policy) -> np.ndarray:
  """Checks that `policy` is the global policy the file was coded with; returns it as int64 steps."""
  S, D = container.num_stages, container.D
  try:
    steps = _check_policy(policy, D, S)
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
  """Raises ContainerError unless the decoded items match the stored CRCs (call after decoding)."""
  x = np.asarray(x_BxD)
  if x.shape != (container.num_items, container.D):
    raise ContainerError(f"decoded items have shape {x.shape}, the file holds {(container.num_items, container.D)}")
  if container.crc_base is None:
    raise ValueError("a compact file's CRCs need the model: unpack it with expected_fingerprint")
  for j, (want, got) in enumerate(zip(container.crcs, _crcs(container.crc_base, container.mode, x, num_classes))):
    if want != got:
      where = "the data set" if container.mode == "dataset" else f"item {j}"
      raise ContainerError(f"CRC mismatch for {where}: the file is corrupt or was decoded with other network numerics")


# --------------------------------------------------------------------------------------------------------------
# One-call compress / decompress


def compress(
  predict: Predict,
  items,
  *,
  mode: str,
  fingerprint: str,
  kind: str,
  policy,
  order_seed: int,
  num_classes: int,
  file_table: bytes = b"",
  stages=None,
  symbols=None,
  compact: bool = False,
) -> bytes:
  """Codes items [B, *item_shape] into one container with len(policy) network calls.

  `stages`: None for a plain OA-ARDM, else the upscale model's transitions (see the module docstring); then
  `policy` is a global policy over S * D steps. `symbols`: the symbol model (default tables over the slots).
  `compact`: write version 3, which leaves the item shape, a one-call-per-variable policy, order seed 0 with one
  item, and the stage count to the model (the decoder must pass them: `expected_shape`, `stages`).
  """
  items = np.asarray(items)
  if items.ndim < 2:
    raise ValueError(f"items must have shape [B, *item_shape], got {items.shape}")
  x = items.reshape(items.shape[0], -1)
  S = num_stages_of(stages)
  sigma = stage_orders(order_seed, x.shape[1], S)
  if mode == "dataset":
    payloads = [encode_stream(predict, x, sigma, policy, num_classes, stages, symbols)]
  elif mode == "item":
    payloads = encode_items(predict, x, sigma, policy, num_classes, stages, symbols)
  else:
    raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
  return pack_container(
    payloads,
    x,
    mode=mode,
    fingerprint=fingerprint,
    kind=kind,
    item_shape=items.shape[1:],
    policy=policy,
    order_seed=order_seed,
    num_classes=num_classes,
    file_table=file_table,
    num_stages=S,
    symbols=_symbols(symbols, _stages(stages, num_classes)).name,
    compact=compact,
    implied_shape=items.shape[1:],
  )


def decompress(
  data: bytes,
  predict: Predict,
  *,
  expected_fingerprint: str,
  policy: PolicySource,
  num_classes: int,
  expected_shape=None,
  max_symbols: int = MAX_SYMBOLS,
  stages=None,
  symbols=None,
) -> tuple[Container, np.ndarray]:
  """Inverse of `compress`: (container, items [B, *item_shape] int32), or ContainerError; never wrong data.

  `policy` is the global step list, or a function (budget, D) -> steps (e.g. a lookup in the model's policy
  file; it may raise ContainerError for an unknown budget). `stages` and `symbols` as given to `compress`.
  """
  c = unpack_container(
    data,
    expected_fingerprint=expected_fingerprint,
    expected_shape=expected_shape,
    max_symbols=max_symbols,
    num_stages=num_stages_of(stages),
  )
  check_stages(c, num_stages_of(stages))
  check_symbols(c, _symbols(symbols, _stages(stages, num_classes)))
  steps = check_policy(c, policy(c.budget, c.D) if callable(policy) else policy)
  sigma = stage_orders(c.order_seed, c.D, c.num_stages)
  if c.mode == "dataset":
    x = decode_stream(predict, c.payloads[0], sigma, steps, c.num_items, c.D, num_classes, stages, symbols)
  else:
    x = decode_items(predict, list(c.payloads), sigma, steps, c.num_items, c.D, num_classes, stages, symbols)
  check_crc(c, x, num_classes)
  return c, x.reshape((c.num_items,) + c.item_shape)
