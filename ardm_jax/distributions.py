"""Output distributions of an ARDM network: what its per-variable outputs mean.

A network emits `num_outputs` floats per variable; a distribution turns them into probabilities over the K
classes {0, ..., K-1} of that variable. Kept apart from the networks so that one network class serves every
output, and duck-typed (no base class) so that the upscale math (`upscale_spec`), sampling and the entropy coder
(`coding_model`) call the same few methods whatever the output is. Two are provided:

  Categorical(K)                    num_outputs = K: softmax over K logits.
  DiscretisedLogisticMixture(K, M)  num_outputs = 3 M: a mixture of M logistics on [-1, 1], discretised to K
                                    equal bins (PixelCNN++ style, one channel); the audio models' output, where
                                    K = 65,536 would make K logits per sample too large.

Every distribution offers (net_out float [..., num_outputs]; x, lo, hi int [...]):
  num_outputs                 floats per variable the network must emit
  log_prob(net_out, x)        float32 [...], log p(x) in nats
  log_mass(net_out, lo, hi)   float32 [...], log p(lo <= x <= hi) (the upscale ARDM's data parametrisation
                              renormalises over such ranges)
  log_pmf(net_out)            float32 [..., K], log p(k) for every class
  sample(key, net_out)        int32 [...]
  coding_logits(net_out)      float32 [..., K], normalised log-probabilities: the table the entropy coder
                              quantises (`entropy_models.quantise_counts` floors every class to a count >= 1)

The discretised logistic's bin k is centred at c_k = 2 k / (K-1) - 1 with half width h = 1 / (K-1); the first
and last bins absorb the tails (-inf and +inf). Mass comes from the logistic CDF in a form that never subtracts
two nearly equal numbers: for a > b,

    log(sigmoid(a) - sigmoid(b)) = -softplus(-a) - softplus(b) + log(-expm1(b - a)),

with a - b = (bin width) / scale known analytically, so even 16-bit bins far in a tail keep a finite log mass.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

DISTRIBUTIONS = ("categorical", "logistic_mixture")


def _check_classes(num_classes) -> int:
  if isinstance(num_classes, (bool, np.bool_)) or not isinstance(num_classes, (int, np.integer)) or num_classes < 2:
    raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
  return int(num_classes)


def _check_net_out(net_out: jax.Array, num_outputs: int, what: str) -> jax.Array:
  if net_out.shape[-1:] != (num_outputs,):
    raise ValueError(
      f"{what} needs net outputs [..., {num_outputs}], got shape {net_out.shape}; build the network "
      f"with num_outputs={num_outputs}"
    )
  return net_out.astype(jnp.float32)


@dataclasses.dataclass(frozen=True)
class Categorical:
  """Softmax over K logits: the network's outputs are the classes' logits.

  Attributes:
    num_classes: K >= 2.

  Raises:
    ValueError: if num_classes is not an integer >= 2.
  """

  num_classes: int

  def __post_init__(self):
    _check_classes(self.num_classes)

  @property
  def num_outputs(self) -> int:
    """K: one logit per class."""
    return self.num_classes

  def log_pmf(self, net_out: jax.Array) -> jax.Array:
    """log p(k) for every class.

    Args:
      net_out: float [..., K] logits.

    Returns:
      float32 [..., K], log_softmax of the logits.

    Raises:
      ValueError: if the last axis is not K.
    """
    return jax.nn.log_softmax(_check_net_out(net_out, self.num_outputs, "Categorical"), axis=-1)

  def log_prob(self, net_out: jax.Array, x: jax.Array) -> jax.Array:
    """log p(x) in nats.

    Args:
      net_out: float [..., K] logits.
      x: int [...] classes in 0..K-1.

    Returns:
      float32 [...].
    """
    logp = self.log_pmf(net_out)
    return jnp.take_along_axis(logp, x[..., None].astype(jnp.int32), axis=-1)[..., 0]

  def log_mass(self, net_out: jax.Array, lo: jax.Array, hi: jax.Array) -> jax.Array:
    """log p(lo <= x <= hi), a logsumexp over the classes in the range.

    Args:
      net_out: float [..., K] logits.
      lo: int [...] first class of the range.
      hi: int [...] last class of the range (inclusive).

    Returns:
      float32 [...]; -inf for an empty range (hi < lo).
    """
    logp = self.log_pmf(net_out)
    k = jnp.arange(self.num_classes).reshape((1,) * lo.ndim + (-1,))
    inside = (k >= lo[..., None]) & (k <= hi[..., None])
    return jax.nn.logsumexp(jnp.where(inside, logp, -jnp.inf), axis=-1)

  def sample(self, key: jax.Array, net_out: jax.Array) -> jax.Array:
    """Draws one class per variable.

    Args:
      key: PRNG key.
      net_out: float [..., K] logits.

    Returns:
      int32 [...] in 0..K-1.
    """
    # Gumbel-argmax in float32: classes below ~1e-8 are effectively never drawn.
    return jax.random.categorical(key, self.log_pmf(net_out), axis=-1).astype(jnp.int32)

  def coding_logits(self, net_out: jax.Array) -> jax.Array:
    """The table the entropy coder quantises: `log_pmf`.

    Args:
      net_out: float [..., K] logits.

    Returns:
      float32 [..., K] normalised log-probabilities.
    """
    # A -inf logit (possible after masking upstream) is clipped by the quantiser to a count of 1.
    return self.log_pmf(net_out)


def _log_sigmoid_diff(
  a: jax.Array, b: jax.Array, log_width_term: jax.Array, lo_open: jax.Array, hi_open: jax.Array
) -> jax.Array:
  """log(sigmoid(a) - sigmoid(b)) with a = +inf where hi_open and b = -inf where lo_open.

  `log_width_term` is log(-expm1(b - a)), passed in because a - b is known exactly from the bin widths. Every
  branch is evaluated on finite values, so gradients stay finite (no NaN from an unselected inf branch).
  """
  term_a = jnp.where(hi_open, 0.0, -jax.nn.softplus(-a))
  term_b = jnp.where(lo_open, 0.0, -jax.nn.softplus(b))
  term_w = jnp.where(lo_open | hi_open, 0.0, log_width_term)
  return term_a + term_b + term_w


@dataclasses.dataclass(frozen=True)
class DiscretisedLogisticMixture:
  """M logistics on [-1, 1] discretised to K bins; outputs per variable: [mixture logits | means | log-scales].

  The means get fixed offsets spread evenly over [-1, 1] and the log-scales an offset -log M, so a zero-output
  network starts as a broad mixture covering the whole range. Log-scales are clipped to
  [min_log_scale, max_log_scale]: the lower clip bounds how sharp a component can be (the official audio model
  uses -7); the upper keeps the bin mass of a very flat component above float32's range of -expm1.

  Attributes:
    num_classes: K >= 2 bins (65,536 for 16-bit audio).
    num_mixtures: M >= 1 components.
    min_log_scale: lower clip of the log-scales.
    max_log_scale: upper clip of the log-scales.

  Raises:
    ValueError: if K < 2, M < 1 (or either is not an integer), or min_log_scale >= max_log_scale.
  """

  num_classes: int
  num_mixtures: int
  min_log_scale: float = -7.0
  max_log_scale: float = 7.0

  def __post_init__(self):
    _check_classes(self.num_classes)
    if (
      isinstance(self.num_mixtures, bool)
      or not isinstance(self.num_mixtures, (int, np.integer))
      or self.num_mixtures < 1
    ):
      raise ValueError(f"num_mixtures must be an integer >= 1, got {self.num_mixtures!r}")
    if not self.min_log_scale < self.max_log_scale:
      raise ValueError(f"min_log_scale {self.min_log_scale} must be below max_log_scale {self.max_log_scale}")

  @property
  def num_outputs(self) -> int:
    """3 M: a mixture logit, a mean and a log-scale per component."""
    return 3 * self.num_mixtures

  @property
  def half_width(self) -> float:
    """h = 1 / (K - 1), half a bin's width on [-1, 1]."""
    return 1.0 / (self.num_classes - 1)

  def unpack(self, net_out: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """The mixture's parameters, with the fixed offsets and the clip applied.

    Args:
      net_out: float [..., 3M], [mixture logits | means | log-scales].

    Returns:
      (log mixture weights, means, log-scales), each float32 [..., M]; the weights are normalised.

    Raises:
      ValueError: if the last axis is not 3M.
    """
    out = _check_net_out(net_out, self.num_outputs, "DiscretisedLogisticMixture")
    m = self.num_mixtures
    log_pi = jax.nn.log_softmax(out[..., :m], axis=-1)
    offsets = jnp.linspace(-1.0 + 1.0 / m, 1.0 - 1.0 / m, m, dtype=jnp.float32)
    means = out[..., m : 2 * m] + offsets.reshape((1,) * (out.ndim - 1) + (m,))
    log_scales = jnp.clip(out[..., 2 * m :] - np.log(m), self.min_log_scale, self.max_log_scale)
    return log_pi, means, log_scales

  def _component_log_mass(self, means, log_scales, lo, hi):
    """log P_m(lo <= x <= hi) per component; means/log_scales [..., M], lo/hi int [..., 1] (or broadcastable)."""
    k_last = self.num_classes - 1
    h = self.half_width
    inv_s = jnp.exp(-log_scales)
    lo_f, hi_f = lo.astype(jnp.float32), hi.astype(jnp.float32)
    upper = 2.0 * hi_f * h - 1.0 + h  # right edge of bin hi
    lower = 2.0 * lo_f * h - 1.0 - h  # left edge of bin lo
    a = inv_s * (upper - means)
    b = inv_s * (lower - means)
    # a - b = (number of bins) * 2h / scale exactly; computing it from a and b would cancel catastrophically.
    width = (hi_f - lo_f + 1.0) * (2.0 * h) * inv_s
    log_width_term = jnp.log(-jnp.expm1(-width))
    return _log_sigmoid_diff(a, b, log_width_term, lo <= 0, hi >= k_last)

  def log_mass(self, net_out: jax.Array, lo: jax.Array, hi: jax.Array) -> jax.Array:
    """log p(lo <= x <= hi) from the CDF at the range's outer bin edges (no sum over K bins).

    Args:
      net_out: float [..., 3M].
      lo: int [...] first bin of the range, lo <= hi.
      hi: int [...] last bin of the range (inclusive).

    Returns:
      float32 [...].
    """
    log_pi, means, log_scales = self.unpack(net_out)
    comp = self._component_log_mass(means, log_scales, lo[..., None], hi[..., None])
    return jax.nn.logsumexp(log_pi + comp, axis=-1)

  def log_prob(self, net_out: jax.Array, x: jax.Array) -> jax.Array:
    """log p(x) in nats, the mass of bin x.

    Args:
      net_out: float [..., 3M].
      x: int [...] bins in 0..K-1.

    Returns:
      float32 [...].
    """
    return self.log_mass(net_out, x, x)

  def log_pmf(self, net_out: jax.Array) -> jax.Array:
    """log p(k) for every bin, one component at a time so the peak memory is [..., K], not [..., M, K].

    Args:
      net_out: float [..., 3M].

    Returns:
      float32 [..., K].
    """
    log_pi, means, log_scales = self.unpack(net_out)
    k = jnp.arange(self.num_classes, dtype=jnp.int32).reshape((1,) * (means.ndim - 1) + (-1,))

    def add_component(acc, comp):
      lp, mu, ls = comp  # each [...]
      lm = self._component_log_mass(mu[..., None], ls[..., None], k, k)
      return jnp.logaddexp(acc, lp[..., None] + lm), None

    comps = tuple(jnp.moveaxis(v, -1, 0) for v in (log_pi, means, log_scales))
    init = jnp.full(means.shape[:-1] + (self.num_classes,), -jnp.inf, jnp.float32)
    out, _ = jax.lax.scan(add_component, init, comps)
    return out

  def sample(self, key: jax.Array, net_out: jax.Array) -> jax.Array:
    """Draws one bin per variable: a component, then a continuous logistic, then the bin it falls in.

    Exact up to float32. Uniforms are drawn on (tiny, 1): the logistic tails beyond ~17 scales (probability ~1e-7)
    are never drawn. No [..., K] table is built, so this is cheap for K = 65,536.

    Args:
      key: PRNG key.
      net_out: float [..., 3M].

    Returns:
      int32 [...] in 0..K-1.
    """
    log_pi, means, log_scales = self.unpack(net_out)
    key_mix, key_u = jax.random.split(key)
    comp = jax.random.categorical(key_mix, log_pi, axis=-1)
    mu = jnp.take_along_axis(means, comp[..., None], axis=-1)[..., 0]
    ls = jnp.take_along_axis(log_scales, comp[..., None], axis=-1)[..., 0]
    u = jax.random.uniform(key_u, mu.shape, jnp.float32, minval=jnp.finfo(jnp.float32).tiny, maxval=1.0)
    y = mu + jnp.exp(ls) * (jnp.log(u) - jnp.log1p(-u))
    # Bin k covers [c_k - h, c_k + h]; the end bins also take everything beyond +-1.
    k = jnp.round((jnp.clip(y, -1.0, 1.0) + 1.0) * 0.5 * (self.num_classes - 1))
    return jnp.clip(k, 0, self.num_classes - 1).astype(jnp.int32)

  def coding_logits(self, net_out: jax.Array) -> jax.Array:
    """The table the entropy coder quantises: `log_pmf`.

    Args:
      net_out: float [..., 3M].

    Returns:
      float32 [..., K] normalised log-probabilities.
    """
    return self.log_pmf(net_out)


Distribution = Any  # Categorical | DiscretisedLogisticMixture (duck-typed: the methods above)


def build_distribution(name: str, num_classes: int, **kwargs) -> Distribution:
  """The output distribution named by `config.ardm.output`.

  Args:
    name: 'categorical' or 'logistic_mixture'.
    num_classes: K.
    **kwargs: options; 'categorical' takes none, 'logistic_mixture' takes num_mixtures (default 30),
      min_log_scale (default -7) and max_log_scale (default 7).

  Returns:
    A `Categorical` or `DiscretisedLogisticMixture`.

  Raises:
    ValueError: for an unknown name or option, or invalid sizes.
  """
  if name == "categorical":
    if kwargs:
      raise ValueError(f"the categorical output takes no options, got {sorted(kwargs)}; remove them")
    return Categorical(int(num_classes))
  if name == "logistic_mixture":
    allowed = {"num_mixtures", "min_log_scale", "max_log_scale"}
    unknown = sorted(set(kwargs) - allowed)
    if unknown:
      raise ValueError(f"unknown logistic_mixture option(s) {unknown}; allowed: {sorted(allowed)}")
    kwargs.setdefault("num_mixtures", 30)
    return DiscretisedLogisticMixture(int(num_classes), **kwargs)
  raise ValueError(f"unknown output distribution {name!r}; use one of {DISTRIBUTIONS}")
