"""Multi-head self-attention for the ARDM networks: q/k/v projections, rotary positions, the attention kernels.

Parameters carry logical axis names (`layers.partitioned`) and activations logical constraints
(`layers.constrain`), as everywhere in the networks; see `layers` for how they map onto a device mesh.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from ardm_jax.nets.layers import Dtype, constrain, kernel_initializer, partitioned


class HeadSplit(nn.Module):
  """[B, N, E] -> [B, N, H, Dh]; the q/k/v projection.

  Written with a full-rank kernel instead of nn.DenseGeneral: DenseGeneral initialises
  a flattened 2-D kernel, which breaks the 3-name logical annotation as soon as a mesh
  and axis rules are active (sharded init/apply would fail).

  Attributes:
    num_heads: H.
    head_dim: Dh.
    dtype: compute dtype (kernel and bias are float32).
    kernel_init: the kernel's initialiser, one of layers.KERNEL_INITS (fan_in E, fan_out H * Dh).
    use_bias: add a bias (zero at initialisation); without it there is no bias parameter.
  """

  num_heads: int
  head_dim: int
  dtype: Dtype = jnp.float32
  kernel_init: str = "lecun_normal"
  use_bias: bool = True

  @nn.compact
  def __call__(self, x_BxNxE: jax.Array) -> jax.Array:
    """Projects x [B, N, E] to [B, N, H, Dh] in `dtype`."""
    init = kernel_initializer(self.kernel_init, in_axis=0, out_axis=(1, 2))
    kernel_ExHxK = self.param(
      "kernel",
      partitioned(init, ("embed", "heads", "kv")),
      (x_BxNxE.shape[-1], self.num_heads, self.head_dim),
      jnp.float32,
    )
    y = jnp.einsum("bne,ehk->bnhk", x_BxNxE.astype(self.dtype), kernel_ExHxK.astype(self.dtype))
    if not self.use_bias:
      return y
    bias_HxK = self.param(
      "bias", partitioned(nn.initializers.zeros, ("heads", "kv")), (self.num_heads, self.head_dim), jnp.float32
    )
    return y + bias_HxK.astype(self.dtype)[None, None, :, :]


class HeadMerge(nn.Module):
  """[B, N, H, Dh] -> [B, N, E]; the attention output projection (see HeadSplit for why).

  Attributes:
    features: E.
    dtype: compute dtype.
    zero_init: start the kernel at zero (a residual branch that starts as the identity).
    kernel_init: otherwise the kernel's initialiser, one of layers.KERNEL_INITS (fan_in H * Dh, fan_out E).
    use_bias: add a bias (zero at initialisation); without it there is no bias parameter.
  """

  features: int
  dtype: Dtype = jnp.float32
  zero_init: bool = False
  kernel_init: str = "lecun_normal"
  use_bias: bool = True

  @nn.compact
  def __call__(self, x_BxNxHxK: jax.Array) -> jax.Array:
    """Projects x [B, N, H, Dh] to [B, N, E] in `dtype`."""
    if self.zero_init:
      init = nn.initializers.zeros
    else:
      init = kernel_initializer(self.kernel_init, in_axis=(0, 1), out_axis=2)
    _, _, num_heads, head_dim = x_BxNxHxK.shape
    kernel_HxKxE = self.param(
      "kernel", partitioned(init, ("heads", "kv", "embed")), (num_heads, head_dim, self.features), jnp.float32
    )
    y = jnp.einsum("bnhk,hke->bne", x_BxNxHxK.astype(self.dtype), kernel_HxKxE.astype(self.dtype))
    if not self.use_bias:
      return y
    bias_E = self.param("bias", partitioned(nn.initializers.zeros, ("embed",)), (self.features,), jnp.float32)
    return y + bias_E.astype(self.dtype)[None, None, :]


def rotary(x_BxNxHxK: jax.Array, max_period: float = 10_000.0) -> jax.Array:
  """Rotary position embedding (Su et al., 2021).

  Rotates feature pairs by position-dependent angles, so q . k depends on the positions' difference.

  Args:
    x_BxNxHxK: queries or keys, [B, N, H, Dh] (Dh even); the rotation is computed in float32.
    max_period: the longest period of the angles.

  Returns:
    [B, N, H, Dh] in x's dtype.

  Raises:
    ValueError: Dh is odd.
  """
  length, head_dim = x_BxNxHxK.shape[1], x_BxNxHxK.shape[-1]
  if head_dim % 2:
    raise ValueError(f"rotary position embedding needs an even head width, got {head_dim}; change model.num_heads")
  half = head_dim // 2
  freqs_F = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
  angles_NxF = jnp.arange(length, dtype=jnp.float32)[:, None] * freqs_F[None, :]
  cos, sin = jnp.cos(angles_NxF)[None, :, None, :], jnp.sin(angles_NxF)[None, :, None, :]
  x1, x2 = x_BxNxHxK[..., :half].astype(jnp.float32), x_BxNxHxK[..., half:].astype(jnp.float32)
  out = jnp.concatenate([x1 * cos - x2 * sin, x1 * sin + x2 * cos], axis=-1)
  return out.astype(x_BxNxHxK.dtype)


# model.attention_impl: how softmax(q k^T / sqrt(d)) v is computed.
#   'plain'  two einsums and a float32 softmax, written out here (the form older checkpoints were trained with)
#   'xla'    jax.nn.dot_product_attention(implementation='xla'): the same math in JAX's own form, any backend
#   'cudnn'  jax.nn.dot_product_attention(implementation='cudnn'): cuDNN flash attention, GPU only, bf16/fp16
#   'auto'   'cudnn' where it applies (GPU backend, bf16/fp16, head width a multiple of 8 up to 128), else 'xla'
# All keep the logits and the softmax in float32. This JAX has no TPU Pallas (splash) kernel behind
# jax.nn.dot_product_attention; on TPU 'xla' and 'auto' are XLA's fused attention.
ATTENTION_IMPLS = ("plain", "xla", "cudnn", "auto")


def check_attention_impl(impl: str) -> str:
  """Returns impl if it is one of ATTENTION_IMPLS; raises ValueError otherwise."""
  if impl not in ATTENTION_IMPLS:
    raise ValueError(f"unknown model.attention_impl {impl!r}; set it to one of {list(ATTENTION_IMPLS)}")
  return impl


def _cudnn_applies(q_BxNxHxK: jax.Array) -> bool:
  head_dim = q_BxNxHxK.shape[-1]
  return (
    jax.default_backend() == "gpu"
    and q_BxNxHxK.dtype in (jnp.bfloat16, jnp.float16)
    and head_dim % 8 == 0
    and head_dim <= 128
  )


def dot_product_attention(
  q_BxNxHxK: jax.Array, k_BxNxHxK: jax.Array, v_BxNxHxK: jax.Array, *, causal: bool = False, impl: str = "plain"
) -> jax.Array:
  """Multi-head attention, softmax(q k^T / sqrt(Dh)) v; logits and softmax in float32.

  Args:
    q_BxNxHxK: queries, [B, N, H, Dh].
    k_BxNxHxK: keys, [B, N, H, Dh].
    v_BxNxHxK: values, [B, N, H, Dh].
    causal: query q sees keys n <= q only.
    impl: one of ATTENTION_IMPLS ('auto': 'cudnn' where it applies, else 'xla').

  Returns:
    [B, N, H, Dh] in v's dtype.

  Raises:
    ValueError: `impl` is not one of ATTENTION_IMPLS.
  """
  check_attention_impl(impl)
  if impl == "auto":
    impl = "cudnn" if _cudnn_applies(q_BxNxHxK) else "xla"
  if impl != "plain":
    return jax.nn.dot_product_attention(q_BxNxHxK, k_BxNxHxK, v_BxNxHxK, is_causal=causal, implementation=impl).astype(
      v_BxNxHxK.dtype
    )
  head_dim = q_BxNxHxK.shape[-1]
  # Softmax in float32: bf16 logits over ~1000 image positions lose too much precision.
  logits_BxHxNxN = jnp.einsum("bqhk,bnhk->bhqn", q_BxNxHxK, k_BxNxHxK, preferred_element_type=jnp.float32) / math.sqrt(
    head_dim
  )
  if causal:
    length = logits_BxHxNxN.shape[-1]
    allowed_NxN = jnp.arange(length)[None, :] <= jnp.arange(length)[:, None]
    logits_BxHxNxN = jnp.where(allowed_NxN, logits_BxHxNxN, -jnp.inf)
  weights_BxHxNxN = jax.nn.softmax(logits_BxHxNxN, axis=-1).astype(v_BxNxHxK.dtype)
  return jnp.einsum("bhqn,bnhk->bqhk", weights_BxHxNxN, v_BxNxHxK)


class SelfAttention(nn.Module):
  """Multi-head self-attention over [B, N, E]: bidirectional (every position sees all, the ARDM networks), or
  `causal` (position q sees positions n <= q only, the single-order ARM baseline).

  Attributes:
    num_heads: H; must divide E.
    dtype: compute dtype.
    zero_init_out: start the output projection at zero.
    causal: causal mask.
    rope: rotary position embedding of queries and keys (relative positions in every layer).
    impl: one of ATTENTION_IMPLS.
    kernel_init: the initialiser of the q, k, v and (unless zero_init_out) output kernels, one of
      layers.KERNEL_INITS.
    use_bias: biases in the q, k, v and output projections.
  """

  num_heads: int
  dtype: Dtype = jnp.float32
  zero_init_out: bool = False
  causal: bool = False
  rope: bool = False
  impl: str = "plain"
  kernel_init: str = "lecun_normal"
  use_bias: bool = True

  @nn.compact
  def __call__(self, x_BxNxE: jax.Array) -> jax.Array:
    """x [B, N, E] -> [B, N, E] in `dtype`; ValueError if num_heads does not divide E."""
    emb_dim = x_BxNxE.shape[-1]
    if emb_dim % self.num_heads:
      raise ValueError(
        f"attention width {emb_dim} is not divisible by num_heads={self.num_heads}; change the width or model.num_heads"
      )
    head_dim = emb_dim // self.num_heads
    act_names = ("batch", "act_length", "act_heads", "act_kv")

    def qkv(name):
      y = HeadSplit(
        self.num_heads, head_dim, dtype=self.dtype, kernel_init=self.kernel_init, use_bias=self.use_bias, name=name
      )(x_BxNxE)
      return constrain(y, act_names)

    q_BxNxHxK, k_BxNxHxK, v_BxNxHxK = qkv("query"), qkv("key"), qkv("value")
    if self.rope:
      q_BxNxHxK, k_BxNxHxK = rotary(q_BxNxHxK), rotary(k_BxNxHxK)
    out_BxNxHxK = dot_product_attention(q_BxNxHxK, k_BxNxHxK, v_BxNxHxK, causal=self.causal, impl=self.impl)
    out_BxNxHxK = constrain(out_BxNxHxK, act_names)
    return HeadMerge(
      emb_dim,
      dtype=self.dtype,
      zero_init=self.zero_init_out,
      kernel_init=self.kernel_init,
      use_bias=self.use_bias,
      name="out",
    )(out_BxNxHxK)
