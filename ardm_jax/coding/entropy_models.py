"""How the coded variables of one policy step become ANS symbols: bit-identical on both sides, NumPy only.

The coding walk (`walk`) hands a symbol model, per policy step, the network's parameters of the
variables it codes, `params` float [B, n, W], and (encoding) their symbols int [B, n]; the model pushes them to,
or pops them from, constriction ANS coders. `coders` is a list of B coders (one stream per item) or of one coder
(one stream for all: the caller flattens the items into one row, [1, B*n, W]). Encoder and decoder run the same
float64 NumPy arithmetic on the same float32 parameters, so they build the same integer tables.

Two models:

  CategoricalTables(C)      W = C logits per variable -> one table of C integer counts (`quantise_counts`), one
                            symbol per variable. The format's original scheme; right when C is small.
  MixtureSplits(K, M)       W = 3 M: the discretised logistic mixture's unpacked parameters (log mixture weights,
                            means, log-scales as `DiscretisedLogisticMixture.unpack` returns them). A value in
                            0..K-1 is coded as ceil(log2 K) binary decisions, each halving its range of candidate
                            classes (left: [lo, mid), right: [mid, hi), mid = (lo + hi) // 2) with
                                P(left) = (F(mid) - F(lo)) / (F(hi) - F(lo)),
                            F(j) the mixture's CDF at the left edge of class j (F(0) = 0 and F(K) = 1: the end bins
                            absorb the tails). The product of the decisions is the discretised mixture's own mass
                            F(x + 1) - F(x), so the rate matches the model's NLL, but no step needs a K-wide
                            table: a 16-bit sample costs 16 CDF evaluations instead of 65,536 bin masses.

Quantisation (both): an integer count c >= 1 per outcome, summing to 2**24 (constriction's precision), passed to
constriction's lazy categorical as the weights c - 1, which sum to exactly 2**24 - (number of outcomes): its
quantiser then reproduces c bit for bit. A split's counts are (1 + w, 2**24 - 1 - w) with
w = floor(P(left) * (2**24 - 2)); a split whose range has no float64 mass (far in a tail) is coded at P = 1/2.

Order of the symbols of one step in one stream (the decoder pops in this order; the encoder pushes the reverse):
tables: the stream's variables in order. Splits: the stream's variables in groups of SPLIT_GROUP_ROWS, group
after group; within a group decision round after round, and within a round the variables still undecided, in
order.
"""

from __future__ import annotations

from collections.abc import Sequence

import constriction
import numpy as np

PRECISION = 24  # constriction's AnsCoder probability precision; the tables below must match it exactly
CHUNK_ENTRIES = 1 << 21  # table entries quantised at once (bounds the float64 work arrays: ~16 MiB each)
SPLIT_GROUP_ROWS = 1 << 14  # variables of one stream whose split decisions are computed together

_FAMILY = constriction.stream.model.Categorical(perfect=False)


class CorruptPayload(ValueError):
  """Garbage in an ANS payload (the walk turns it into a `container.ContainerError`)."""


# --------------------------------------------------------------------------------------------------------------
# Quantisation


def quantise_counts(logits_or_probs, precision: int = PRECISION, *, from_probs: bool = False) -> np.ndarray:
  """Quantises a table deterministically: integer counts, each >= 1, summing to exactly 2**precision.

  Softmax in float64 with a fixed formula and a sequential sum; every class gets 1 + floor(p_k * (2**24 - K))
  and the rounding residual goes to the first most probable class. Rows are independent, so a row's counts do
  not depend on the rows quantised with it.

  Args:
    logits_or_probs: float [..., K] logits (may hold -inf/+inf, clipped to +-1e300, so an all -inf row is
      uniform), or with `from_probs` non-negative finite probabilities (need not be normalised).
    precision: bits of the total; 1..30 and at least log2(K).
    from_probs: the input holds probabilities, not logits.

  Returns:
    int64 counts [..., K].

  Raises:
    ValueError: NaN, a non-float dtype, fewer than 2 classes, or a row without mass.
  """
  a = np.asarray(logits_or_probs)
  if not np.issubdtype(a.dtype, np.floating):
    raise ValueError(f"quantise_counts needs float logits or probabilities, got dtype {a.dtype}")
  if a.ndim < 1 or a.shape[-1] < 2:
    raise ValueError(f"need at least 2 classes on the last axis, got shape {a.shape}")
  num_classes = a.shape[-1]
  if not 1 <= precision <= 30 or num_classes > (1 << precision):
    raise ValueError(
      f"precision {precision} cannot give {num_classes} classes a count >= 1; use <= 30 bits and >= log2(K)"
    )
  v = a.astype(np.float64)  # exact for float32 input
  if np.isnan(v).any():
    raise ValueError("probability table input contains NaN; check the network output")
  if from_probs:
    if (v < 0).any() or not np.isfinite(v).all():
      raise ValueError("probabilities must be finite and non-negative")
    weights = v
  else:
    v = np.clip(v, -1e300, 1e300)
    weights = np.exp(np.ascontiguousarray(v - v.max(axis=-1, keepdims=True)))
  # cumsum is a strictly sequential sum, so the total does not depend on NumPy's pairwise blocking.
  total = np.cumsum(weights, axis=-1)[..., -1:]
  if (total <= 0).any():
    raise ValueError("a probability row sums to zero; give every row some mass")
  p = weights / total
  one = 1 << precision
  counts = 1 + np.floor(p * float(one - num_classes)).astype(np.int64)
  residual = one - counts.sum(axis=-1, keepdims=True)
  top = np.argmax(p, axis=-1)[..., None]  # first index among ties
  topcount = np.take_along_axis(counts, top, axis=-1) + residual
  if (topcount < 1).any():  # impossible for K <= 2**24 (the float error is < 1 count); kept as a guard
    raise RuntimeError("probability quantisation failed to keep every count >= 1")
  np.put_along_axis(counts, top, topcount, axis=-1)
  return counts


def quantise_probs(logits_or_probs, precision: int = PRECISION, *, from_probs: bool = False) -> np.ndarray:
  """The quantised probabilities count / 2**precision, float64 [..., K] (exact dyadic values).

  Args: as `quantise_counts`.
  """
  return quantise_counts(logits_or_probs, precision, from_probs=from_probs) / float(1 << precision)


def coder_weights(counts: np.ndarray) -> np.ndarray:
  """constriction's weights for a table: counts - 1, integers summing to 2**24 - K.

  Its lazy quantiser (left cumulative = floor(cumsum * scale) + index, scale exactly 1.0) then reproduces `counts`
  bit for bit, whatever float width it computes in.

  Args:
    counts: int [..., K] from `quantise_counts`.

  Returns:
    float64 [rows, K], contiguous.
  """
  return np.ascontiguousarray((counts - 1).reshape(-1, counts.shape[-1]), dtype=np.float64)


def _decode(coder, weights: np.ndarray) -> np.ndarray:
  try:
    return np.asarray(coder.decode(_FAMILY, weights)).reshape(-1)
  except Exception as e:  # constriction raises assorted errors on garbage; none may escape as-is
    raise CorruptPayload(f"payload is corrupt ({type(e).__name__}: {e})") from None


def _check_params(params, width: int, what: str) -> np.ndarray:
  p = np.asarray(params)
  if p.ndim != 3 or p.shape[-1] != width or p.dtype not in (np.float32, np.float64):
    raise ValueError(f"{what} needs float32 parameters [B, n, {width}], got {p.dtype} {p.shape}")
  return p


def _stream_rows(coders: Sequence, B: int) -> None:
  if len(coders) != B:
    raise ValueError(f"need one coder per item row ({B}), got {len(coders)}")


# --------------------------------------------------------------------------------------------------------------
# Categorical tables


class CategoricalTables:
  """One quantised table of C counts per variable, from its C logits (W = C).

  Tables are quantised and coded in chunks of at most CHUNK_ENTRIES entries (32 rows for C = 65,536), so the
  float64 work arrays stay small; rows are independent, so chunking changes no bit.

  Attributes:
    name: 'tables', the container's name of the scheme.
    num_classes: C.
    width: W = C parameters per variable.
  """

  name = "tables"

  def __init__(self, num_classes: int):
    self.num_classes = self.width = int(num_classes)

  def _chunks(self, num_rows: int) -> list[slice]:
    step = max(1, CHUNK_ENTRIES // self.width)
    return [slice(lo, min(lo + step, num_rows)) for lo in range(0, num_rows, step)]

  def push(self, coders: Sequence, sym_Bxn: np.ndarray, params: np.ndarray) -> None:
    """Pushes the symbols so that `pop` returns them in order (ANS is a stack: last chunk first).

    Args:
      coders: B constriction AnsCoders, one per row.
      sym_Bxn: the symbols, int [B, n] in 0..C-1.
      params: the logits, float32 [B, n, C].
    """
    p = _check_params(params, self.width, "CategoricalTables")
    B, n, C = p.shape
    _stream_rows(coders, B)
    rows, sym = p.reshape(-1, C), np.asarray(sym_Bxn).reshape(-1).astype(np.int32)
    for sl in reversed(self._chunks(B * n)):
      weights = coder_weights(quantise_counts(rows[sl]))
      for b in reversed(range(sl.start // n, (sl.stop - 1) // n + 1)):  # the items this chunk touches
        lo, hi = max(sl.start, b * n), min(sl.stop, (b + 1) * n)
        coders[b].encode_reverse(np.ascontiguousarray(sym[lo:hi]), _FAMILY, weights[lo - sl.start : hi - sl.start])

  def pop(self, coders: Sequence, params: np.ndarray) -> np.ndarray:
    """Pops the symbols `push` pushed with the same parameters: int64 [B, n] (CorruptPayload on garbage)."""
    p = _check_params(params, self.width, "CategoricalTables")
    B, n, C = p.shape
    _stream_rows(coders, B)
    rows, out = p.reshape(-1, C), np.empty(B * n, np.int64)
    for sl in self._chunks(B * n):
      weights = coder_weights(quantise_counts(rows[sl]))
      for b in range(sl.start // n, (sl.stop - 1) // n + 1):
        lo, hi = max(sl.start, b * n), min(sl.stop, (b + 1) * n)
        out[lo:hi] = _decode(coders[b], weights[lo - sl.start : hi - sl.start])
    return out.reshape(B, n)

  def code_bits(self, params: np.ndarray, sym_Bxn: np.ndarray) -> np.ndarray:
    """-log2 of each symbol's quantised probability (what the coder pays), float64 [B, n]."""
    p = _check_params(params, self.width, "CategoricalTables")
    rows, sym = p.reshape(-1, self.width), np.asarray(sym_Bxn).reshape(-1, 1).astype(np.int64)
    bits = np.empty(len(rows))
    for sl in self._chunks(len(rows)):
      c = np.take_along_axis(quantise_counts(rows[sl]), sym[sl], axis=-1)[:, 0]
      bits[sl] = PRECISION - np.log2(c.astype(np.float64))
    return bits.reshape(p.shape[:2])

  def model_bits(self, params: np.ndarray, sym_Bxn: np.ndarray) -> np.ndarray:
    """-log2 p of each symbol under the network's own (unquantised) softmax, in float64, [B, n]."""
    p = _check_params(params, self.width, "CategoricalTables")
    rows, sym = p.reshape(-1, self.width), np.asarray(sym_Bxn).reshape(-1, 1).astype(np.int64)
    bits = np.empty(len(rows))
    for sl in self._chunks(len(rows)):
      z = rows[sl].astype(np.float64)
      z = z - z.max(axis=-1, keepdims=True)
      bits[sl] = (np.log(np.exp(z).sum(axis=-1)) - np.take_along_axis(z, sym[sl], axis=-1)[:, 0]) / np.log(2)
    return bits.reshape(p.shape[:2])


# --------------------------------------------------------------------------------------------------------------
# Discretised logistic mixture by binary splits


class _SplitWalk:
  """The binary-split state of a group of variables: candidate range [lo, hi) and the CDF at both ends."""

  def __init__(self, model: MixtureSplits, params_rxW: np.ndarray):
    K, M = model.num_classes, model.num_mixtures
    p = params_rxW.astype(np.float64)
    log_pi = p[:, :M] - p[:, :M].max(axis=1, keepdims=True)
    pi = np.exp(log_pi)
    total = pi[:, 0].copy()
    for m in range(1, M):  # a sequential sum: the same bits whatever NumPy's reduction blocking
      total += pi[:, m]
    # Components as [M, r] rows, so each CDF evaluation is M vector operations in a fixed order.
    self.pi = np.ascontiguousarray((pi / total[:, None]).T)
    self.mu = np.ascontiguousarray(p[:, M : 2 * M].T)
    self.inv_s = np.ascontiguousarray(np.exp(-p[:, 2 * M :]).T)
    self.K = K
    r = len(p)
    self.lo, self.hi = np.zeros(r, np.int64), np.full(r, K, np.int64)
    self.f_lo, self.f_hi = np.zeros(r), np.ones(r)

  def cdf(self, rows: np.ndarray, j: np.ndarray) -> np.ndarray:
    """F(j) of the given rows: the mixture CDF at the left edge of class j (0 at j = 0, 1 at j = K)."""
    edge = (2.0 * j - 1.0) / (self.K - 1) - 1.0
    acc = np.zeros(len(rows))
    with np.errstate(over="ignore"):  # exp overflow far in a tail gives 1/inf = 0, the right limit
      for m in range(self.pi.shape[0]):
        acc += self.pi[m, rows] / (1.0 + np.exp((self.mu[m, rows] - edge) * self.inv_s[m, rows]))
    return np.where(j <= 0, 0.0, np.where(j >= self.K, 1.0, acc))

  def next_round(self):
    """(rows still undecided, their mid, CDF at mid, weights [r, 2]), or None when every value is decided."""
    rows = np.flatnonzero(self.hi - self.lo >= 2)
    if not len(rows):
      return None
    mid = (self.lo[rows] + self.hi[rows]) // 2
    f_mid = self.cdf(rows, mid)
    f_lo, f_hi = self.f_lo[rows], self.f_hi[rows]
    den = f_hi - f_lo
    ok = den > 0
    p_left = np.where(ok, (f_mid - f_lo) / np.where(ok, den, 1.0), 0.5)
    scale = float((1 << PRECISION) - 2)
    w = np.floor(np.clip(p_left, 0.0, 1.0) * scale)
    return rows, mid, f_mid, np.ascontiguousarray(np.stack([w, scale - w], axis=1))

  def decide(self, rows: np.ndarray, mid: np.ndarray, f_mid: np.ndarray, right: np.ndarray) -> None:
    self.lo[rows] = np.where(right, mid, self.lo[rows])
    self.f_lo[rows] = np.where(right, f_mid, self.f_lo[rows])
    self.hi[rows] = np.where(right, self.hi[rows], mid)
    self.f_hi[rows] = np.where(right, self.f_hi[rows], f_mid)


def _split_counts(weights: np.ndarray, right: np.ndarray) -> np.ndarray:
  return 1.0 + np.where(right, weights[:, 1], weights[:, 0])


class MixtureSplits:
  """The discretised logistic mixture of K classes coded by binary splits of the class range (module doc).

  Variables of one stream are split in groups of SPLIT_GROUP_ROWS, so the float64 work arrays stay small.

  Attributes:
    name: 'splits', the container's name of the scheme.
    num_classes: K.
    num_mixtures: M.
    width: W = 3 M parameters per variable (log weights, means, log-scales).
  """

  name = "splits"

  def __init__(self, num_classes: int, num_mixtures: int):
    self.num_classes, self.num_mixtures = int(num_classes), int(num_mixtures)
    self.width = 3 * self.num_mixtures

  def _groups(self, num_rows: int) -> list[slice]:
    return [slice(lo, min(lo + SPLIT_GROUP_ROWS, num_rows)) for lo in range(0, num_rows, SPLIT_GROUP_ROWS)]

  def _check_sym(self, sym_Bxn, shape) -> np.ndarray:
    s = np.asarray(sym_Bxn).astype(np.int64)
    if s.shape != shape or s.min(initial=0) < 0 or s.max(initial=0) >= self.num_classes:
      raise ValueError(f"symbols must be ints in 0..{self.num_classes - 1} of shape {shape}")
    return s

  def _rounds(self, params_rxW: np.ndarray, x_r: np.ndarray) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Encoder side: (rows, right, weights) per decision round of the known values x_r."""
    walk, rounds = _SplitWalk(self, params_rxW), []
    while (nxt := walk.next_round()) is not None:
      rows, mid, f_mid, weights = nxt
      right = x_r[rows] >= mid
      walk.decide(rows, mid, f_mid, right)
      rounds.append((rows, right, weights))
    return rounds

  def push(self, coders: Sequence, sym_Bxn: np.ndarray, params: np.ndarray) -> None:
    """Pushes the values' split decisions so that `pop` returns them in order.

    Args:
      coders: B constriction AnsCoders, one per row.
      sym_Bxn: the values, int [B, n] in 0..K-1.
      params: the unpacked mixture parameters, float32 [B, n, 3M].
    """
    p = _check_params(params, self.width, "MixtureSplits")
    B, n, _ = p.shape
    _stream_rows(coders, B)
    sym = self._check_sym(sym_Bxn, (B, n))
    for g in reversed(self._groups(n)):
      width = g.stop - g.start
      rounds = self._rounds(p[:, g].reshape(B * width, -1), sym[:, g].reshape(-1))
      for rows, right, weights in reversed(rounds):
        bounds = np.searchsorted(rows, np.arange(B + 1) * width)  # rows are item-major and sorted
        for b in reversed(range(B)):
          lo, hi = bounds[b], bounds[b + 1]
          if hi > lo:
            coders[b].encode_reverse(right[lo:hi].astype(np.int32), _FAMILY, weights[lo:hi])

  def pop(self, coders: Sequence, params: np.ndarray) -> np.ndarray:
    """Pops the values `push` pushed with the same parameters: int64 [B, n] (CorruptPayload on garbage)."""
    p = _check_params(params, self.width, "MixtureSplits")
    B, n, _ = p.shape
    _stream_rows(coders, B)
    out = np.empty((B, n), np.int64)
    for g in self._groups(n):
      width = g.stop - g.start
      walk = _SplitWalk(self, p[:, g].reshape(B * width, -1))
      while (nxt := walk.next_round()) is not None:
        rows, mid, f_mid, weights = nxt
        bounds = np.searchsorted(rows, np.arange(B + 1) * width)
        right = np.concatenate(
          [
            _decode(coders[b], weights[bounds[b] : bounds[b + 1]])
            if bounds[b + 1] > bounds[b]
            else np.zeros(0, np.int64)
            for b in range(B)
          ]
        )
        walk.decide(rows, mid, f_mid, right.astype(bool))
      out[:, g] = walk.lo.reshape(B, width)
    return out

  def code_bits(self, params: np.ndarray, sym_Bxn: np.ndarray) -> np.ndarray:
    """-log2 of what the coder pays per symbol (the product of its quantised split probabilities), [B, n]."""
    p = _check_params(params, self.width, "MixtureSplits")
    B, n, _ = p.shape
    sym = self._check_sym(sym_Bxn, (B, n))
    bits = np.zeros((B, n))
    for g in self._groups(n):
      width = g.stop - g.start
      b_r = np.zeros(B * width)
      for rows, right, weights in self._rounds(p[:, g].reshape(B * width, -1), sym[:, g].reshape(-1)):
        b_r[rows] += PRECISION - np.log2(_split_counts(weights, right))
      bits[:, g] = b_r.reshape(B, width)
    return bits

  def model_bits(self, params: np.ndarray, sym_Bxn: np.ndarray) -> np.ndarray:
    """-log2 of the discretised mixture's mass of each symbol in float64, [B, n] (the model's own NLL).

    Each component's bin mass is log(sigmoid(a) - sigmoid(b)) = -softplus(-a) - softplus(b) + log(-expm1(b-a))
    with a - b known exactly from the bin width, as `DiscretisedLogisticMixture` computes it (no cancellation
    in the tails)."""
    p = _check_params(params, self.width, "MixtureSplits").astype(np.float64)
    K, M = self.num_classes, self.num_mixtures
    x = self._check_sym(sym_Bxn, p.shape[:2])[..., None].astype(np.float64)
    log_pi = p[..., :M] - np.logaddexp.reduce(p[..., :M], axis=-1, keepdims=True)
    mu, inv_s = p[..., M : 2 * M], np.exp(-p[..., 2 * M :])
    h = 1.0 / (K - 1)
    a = inv_s * (2.0 * x * h - 1.0 + h - mu)
    b = inv_s * (2.0 * x * h - 1.0 - h - mu)
    softplus = lambda z: np.logaddexp(0.0, z)  # noqa: E731
    lo_open, hi_open = x <= 0, x >= K - 1
    log_mass = (
      np.where(hi_open, 0.0, -softplus(-a))
      + np.where(lo_open, 0.0, -softplus(b))
      + np.where(lo_open | hi_open, 0.0, np.log(-np.expm1(-2.0 * h * inv_s)))
    )
    return -np.logaddexp.reduce(log_pi + log_mass, axis=-1) / np.log(2.0)
