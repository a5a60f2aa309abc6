"""The coding walk over a policy: encode backwards, decode forwards, with the same network calls.

The network enters as one callable, a single call for the whole batch at global policy step `t`:

    predict(x_BxD int32, known_BxD bool, t: int) -> params float32 [B, D, W]

A callable with `positions_only = True` is called as `predict(x_BxD, known_BxD, t, pos_n)` and returns only the
parameters of the variables `pos_n` this step codes, float32 [B, n, W]: the same numbers without holding
[B, D, W] (large data sets, or W = 65,536 for 16-bit audio). If it also has `dispatch(...)` with the same
arguments, returning a function that waits for the result, the encoder starts step k + 1 before it codes step k.
The parameters are what the symbol model (`entropy_models`, default tables over the slots: W = C logits) turns
into ANS symbols.

ANS is a stack. A global policy is an increasing array of global steps g_0 = 0 < g_1 < ... < g_{P-1} < S * D
containing every stage start s * D (for S = 1 an ordinary policy over D steps); global step g = s * D + t is
step t of stage s (see `stages`), with the stage's own order sigma_s: `x_BxD` holds the level-(s+1) states of the
variables with sigma_s < t and the level-s states of all others, and `known_BxD` is `sigma_s < t` (the same order
for every item). Encoding walks the policy backwards (k = P-1 .. 0): one call, then the slots of the variables
with sigma_s in [t_k, end_k) are pushed in the canonical order (item-major, then sigma_s ascending), so the
decoder, walking forwards with the same calls and moving every decoded variable to the child in its slot, pops
them in that same order. Each direction makes exactly len(policy) network calls.

The decoder must see the network numerics of the encoder (same model, the same batch of items decoded together,
same device kind, same NumPy `exp`); the container's CRC turns any mismatch into an error. A stream costs its
quantised NLL plus about 15-25 bits (the ANS state left by the first symbols pushed), so per-item streams pay that
once per item and a data-set stream once in all. A decoder must end with an empty coder, which rejects most
corrupt payloads before the CRC is consulted.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import constriction
import numpy as np

from ardm_jax.coding.checks import MAX_SYMBOLS, check_items, check_policy, check_uint
from ardm_jax.coding.container import ContainerError
from ardm_jax.coding.entropy_models import CategoricalTables, CorruptPayload, MixtureSplits
from ardm_jax.coding.orders import check_orders
from ardm_jax.coding.stages import Stages, index_stages

Predict = Callable[..., np.ndarray]


def _plan(sigma_SxD: np.ndarray, steps: np.ndarray, D: int) -> list[tuple[int, int, int, np.ndarray]]:
  """Per global policy step: (stage s, start t, global step g, the variables it codes in sigma_s order)."""
  by_stage = [np.argsort(sigma, kind="stable") for sigma in sigma_SxD]
  ends = np.append(steps[1:], sigma_SxD.shape[0] * D)
  plan = []
  for g, e in zip(steps.tolist(), ends.tolist()):
    s = g // D
    plan.append((s, g - s * D, g, by_stage[s][g - s * D : e - s * D]))
  return plan


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


def symbol_model(symbols, st: Stages):
  """Checks the symbol model the walk codes with.

  Args:
    symbols: None (tables over the slots) or an `entropy_models.CategoricalTables` / `MixtureSplits`.
    st: the indexed stages; the model must code exactly their C slots.

  Returns:
    The symbol model.

  Raises:
    ValueError: another type, or a class count that is not C.
  """
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
  st = index_stages(stages, num_classes)
  sym_model = symbol_model(symbols, st)
  x = check_items(x_BxD, num_classes)
  D = x.shape[1]
  sigma = check_orders(sigma, D, st.num_stages)
  steps = check_policy(policy, D, st.num_stages)
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
  st = index_stages(stages, num_classes)
  sym_model = symbol_model(symbols, st)
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
  """Encodes items into one ANS stream for all of them (per data set mode), with len(policy) network calls.

  Args:
    predict: the network call (module docstring).
    x_BxD: the items' data values, int [B, D].
    sigma: the orders, int [S, D] (`orders.stage_orders`; [D] for S = 1).
    policy: the global steps, int [P].
    num_classes: K.
    stages: None for a plain OA-ARDM, else the upscale transitions (see `stages`).
    symbols: the symbol model (default: tables over the slots).

  Returns:
    The payload bytes.

  Raises:
    ValueError: malformed arguments or network outputs.
  """
  return _encode(predict, x_BxD, sigma, policy, num_classes, stages, symbols, per_item=False)[0]


def encode_items(predict: Predict, x_BxD, sigma, policy, num_classes: int, stages=None, symbols=None) -> list[bytes]:
  """Encodes items into one ANS stream each (per item mode); the network calls are still batched.

  Args: as `encode_stream`.

  Returns:
    One payload per item, in item order.
  """
  return _encode(predict, x_BxD, sigma, policy, num_classes, stages, symbols, per_item=True)


def _decode_walk(
  predict: Predict, coders: list, sigma, policy, num_items: int, D: int, num_classes: int, stages=None, symbols=None
):
  """Forward walk shared by both decoders: one stream (one coder) or one per item."""
  st = index_stages(stages, num_classes)
  sym_model = symbol_model(symbols, st)
  num_items, D = check_uint(num_items, "num_items", 1 << 64), check_uint(D, "D", 1 << 64)
  if num_items < 1 or D < 1 or num_items * D * st.num_stages > MAX_SYMBOLS:
    raise ContainerError(f"implausible size: {num_items} items of {D} variables; the file is corrupt")
  sigma = check_orders(sigma, D, st.num_stages)
  steps = check_policy(policy, D, st.num_stages)
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
  """Decodes one stream of `num_items` items (inverse of `encode_stream`), with len(policy) network calls.

  Args:
    predict: the network call, bit-identical to the encoder's.
    payload: the stream's bytes.
    sigma: the orders, int [S, D].
    policy: the global steps, int [P].
    num_items: N.
    D: variables per item.
    num_classes: K.
    stages: as given to the encoder.
    symbols: as given to the encoder.

  Returns:
    The items, int32 [N, D].

  Raises:
    ContainerError: a corrupt payload or an implausible size.
    ValueError: malformed arguments or network outputs.
  """
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
  """Decodes per-item streams (inverse of `encode_items`): all items together, as they were encoded.

  Args: as `decode_stream`, with `payloads` one per item.

  Returns:
    The items, int32 [N, D].

  Raises:
    ContainerError: a payload count other than N, a corrupt payload or an implausible size.
  """
  if len(payloads) != num_items:
    raise ContainerError(f"expected {num_items} item payloads, got {len(payloads)}")
  coders = [_open_coder(p) for p in payloads]
  x = _decode_walk(predict, coders, sigma, policy, num_items, D, num_classes, stages, symbols)
  _require_empty(coders)
  return x
