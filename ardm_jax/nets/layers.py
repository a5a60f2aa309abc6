"""Pieces shared by the ARDM networks: annotated layers, time embedding, attention.

Every parameter is annotated exactly once, here, with logical axis names
(`nn.with_logical_partitioning`); the config's logical-axis rules decide how those
names map onto a device mesh. Activation constraints (`nn.with_logical_constraint`)
are no-ops unless logical-axis rules are active and a mesh is set with `jax.set_mesh`
(flax ignores the legacy `with mesh:` context), so the same modules run unsharded.
"""

from __future__ import annotations

from collections.abc import Sequence
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Dtype = Any

# Logical names a parameter may carry; sharding rules are written against these.
# 'layers' is the stacking axis of scanned blocks (model.scan_layers); rules that do not name it leave it unsharded.
PARAM_AXIS_NAMES = (
  "embed",
  "mlp",
  "heads",
  "kv",
  "vocab",
  "conv_h",
  "conv_w",
  "conv_in",
  "length_pos",
  "time",
  "layers",
)
SCAN_AXIS = "layers"

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def compute_dtype(name: str) -> Dtype:
  """The compute dtype named by model.dtype ('float32' or 'bfloat16', else ValueError); parameters stay float32."""
  if name not in _DTYPES:
    raise ValueError(f"model dtype {name!r} is not supported; set model.dtype to one of {sorted(_DTYPES)}")
  return _DTYPES[name]


# model.remat: which blocks recompute their activations in the backward pass.
#   'none'       no block (most memory, fewest FLOPs)
#   'attention'  attention layers only (their [heads, N, N] logits and weights are the largest activations)
#   'full'       every block, saving nothing inside it (least memory, ~1/3 more forward FLOPs)
#   a jax.checkpoint_policies name (e.g. 'dots_with_no_batch_dims_saveable'): every block, saving what the policy
#                names (here: the weight matmuls' outputs) and recomputing the rest.
# True / False (older configs and workdirs) read as 'full' / 'none'.
_JAX_REMAT_POLICIES = (
  "nothing_saveable",
  "everything_saveable",
  "dots_saveable",
  "dots_with_no_batch_dims_saveable",
  "checkpoint_dots",
  "checkpoint_dots_with_no_batch_dims",
)
REMAT_CHOICES = ("none", "attention", "full") + tuple(
  n for n in _JAX_REMAT_POLICIES if hasattr(jax.checkpoint_policies, n)
)


def remat_choice(value) -> str:
  """model.remat as one of REMAT_CHOICES (True / False from older configs: 'full' / 'none'; else ValueError)."""
  if isinstance(value, (bool, np.bool_)):
    return "full" if value else "none"
  if value is None:
    return "none"
  if not isinstance(value, str) or value not in REMAT_CHOICES:
    raise ValueError(f"unknown model.remat {value!r}; set it to one of {list(REMAT_CHOICES)} (or True / False)")
  return value


def maybe_remat(module_cls, remat, kind: str, *, in_scan: bool = False):
  """`module_cls`, wrapped in nn.remat when model.remat covers blocks of `kind` ('attention' or 'block').

  Inside nn.scan the loop already keeps recomputation from being merged away, so prevent_cse is off there
  (as the JAX docs recommend for checkpoint inside scan).

  Args:
    module_cls: a flax module class.
    remat: model.remat (see `remat_choice`); a policy name saves what the policy names.
    kind: 'attention' (wrapped for 'attention' too) or 'block' (only for 'full' or a policy).
    in_scan: whether the module runs as the body of nn.scan.
  """
  choice = remat_choice(remat)
  if choice == "none" or (choice == "attention" and kind != "attention"):
    return module_cls
  policy = None if choice in ("full", "attention") else getattr(jax.checkpoint_policies, choice)
  return nn.remat(module_cls, policy=policy, prevent_cse=not in_scan)


def scan_blocks(body, length: int, *, in_axes=(), out_axes=0):
  """nn.scan over `length` copies of the module passed to `body(module, carry, *xs) -> (carry, ys)`.

  Parameters gain a leading axis of size `length`, named SCAN_AXIS for the sharding rules; params and dropout
  draw a different key per layer, as separate unrolled layers do. `in_axes` / `out_axes` are nn.scan's, for the
  extra inputs `xs` and the outputs `ys` (nn.broadcast: the same input for every layer).
  """
  return nn.scan(
    body,
    variable_axes={"params": 0, "intermediates": 0},
    split_rngs={"params": True, "dropout": True},
    in_axes=in_axes,
    out_axes=out_axes,
    length=length,
    metadata_params={nn.PARTITION_NAME: SCAN_AXIS},
  )


def partitioned(init_fn, names: Sequence[str]):
  """`init_fn` with one logical axis name per parameter axis, for the sharding rules."""
  return nn.with_logical_partitioning(init_fn, tuple(names))


def constrain(x: jax.Array, names: Sequence[str | None]) -> jax.Array:
  """x constrained to one logical axis name per axis (None: not sharded); a no-op without rules and a mesh."""
  return nn.with_logical_constraint(x, tuple(names))


def dense(
  features: int, names: tuple[str, str], *, dtype: Dtype, zero_init: bool = False, name: str | None = None
) -> nn.Dense:
  """Dense layer computing in `dtype`, float32 kernel annotated `names` (in, out), bias `names[1:]`.

  The kernel is lecun-normal, or zeros with `zero_init` (a residual branch or output head that starts at 0).
  """
  kernel_init = nn.initializers.zeros if zero_init else nn.initializers.lecun_normal()
  return nn.Dense(
    features,
    dtype=dtype,
    param_dtype=jnp.float32,
    kernel_init=partitioned(kernel_init, names),
    bias_init=partitioned(nn.initializers.zeros, names[1:]),
    name=name,
  )


def conv3x3(
  features: int, *, dtype: Dtype, out_axis: str = "embed", zero_init: bool = False, name: str | None = None
) -> nn.Conv:
  """`conv` with a 3x3 kernel."""
  return conv(features, (3, 3), dtype=dtype, out_axis=out_axis, zero_init=zero_init, name=name)


def conv(
  features: int,
  kernel_size: tuple[int, int],
  *,
  dtype: Dtype,
  out_axis: str = "embed",
  zero_init: bool = False,
  name: str | None = None,
) -> nn.Conv:
  """'SAME'-padded 2-D convolution, float32 kernel annotated ('conv_h', 'conv_w', 'conv_in', out_axis).

  Lecun-normal kernel, or zeros with `zero_init`; the bias (annotated (out_axis,)) starts at zero.
  """
  kernel_init = nn.initializers.zeros if zero_init else nn.initializers.lecun_normal()
  return nn.Conv(
    features,
    kernel_size,
    padding="SAME",
    dtype=dtype,
    param_dtype=jnp.float32,
    kernel_init=partitioned(kernel_init, ("conv_h", "conv_w", "conv_in", out_axis)),
    bias_init=partitioned(nn.initializers.zeros, (out_axis,)),
    name=name,
  )


def group_norm(num_channels: int, *, dtype: Dtype, max_groups: int = 32, name: str | None = None) -> nn.GroupNorm:
  """GroupNorm with the most groups (up to max_groups) that divide num_channels with >= 4 channels each.

  With one channel per group the norm would remove any per-channel constant, such as the time embedding a
  ResBlock adds. Paper widths (256, 512) still get the usual 32 groups.
  """
  limit = max(1, min(max_groups, num_channels // 4))
  groups = max(g for g in range(1, limit + 1) if num_channels % g == 0)
  return nn.GroupNorm(
    num_groups=groups,
    dtype=dtype,
    param_dtype=jnp.float32,
    scale_init=partitioned(nn.initializers.ones, ("embed",)),
    bias_init=partitioned(nn.initializers.zeros, ("embed",)),
    name=name,
  )


def layer_norm(*, dtype: Dtype, name: str | None = None) -> nn.LayerNorm:
  """LayerNorm computing in `dtype`, float32 scale and bias annotated ('embed',)."""
  return nn.LayerNorm(
    dtype=dtype,
    param_dtype=jnp.float32,
    scale_init=partitioned(nn.initializers.ones, ("embed",)),
    bias_init=partitioned(nn.initializers.zeros, ("embed",)),
    name=name,
  )


def embed(num_rows: int, features: int, *, dtype: Dtype, stddev: float = 1.0, name: str | None = None) -> nn.Embed:
  """Embedding table [num_rows, features], float32, N(0, stddev) init, annotated ('vocab', 'embed')."""
  return nn.Embed(
    num_rows,
    features,
    dtype=dtype,
    param_dtype=jnp.float32,
    embedding_init=partitioned(nn.initializers.normal(stddev), ("vocab", "embed")),
    name=name,
  )


def check_inputs(x_in, known, t, data_shape) -> None:
  """Checks a network's inputs at trace time, so a wrong batch layout fails with a readable message.

  Raises:
    ValueError: unless x_in is int [B, *data_shape], known has x_in's shape and t is [B].
  """
  want = tuple(data_shape)
  if x_in.ndim != len(want) + 1 or tuple(x_in.shape[1:]) != want:
    raise ValueError(f"x_in has shape {x_in.shape}, expected [B, *{want}]; pass one batch of items")
  if known.shape != x_in.shape:
    raise ValueError(f"known has shape {known.shape} but x_in has {x_in.shape}; they must match")
  if t.shape != x_in.shape[:1]:
    raise ValueError(f"t has shape {t.shape}, expected [{x_in.shape[0]}] (one step per item)")
  if not jnp.issubdtype(x_in.dtype, jnp.integer):
    raise ValueError(f"x_in has dtype {x_in.dtype}; pass integer class ids (int32)")


def output_input_step_sizes(net) -> tuple[int, int, int]:
  """(outputs per variable, input ids, time steps) of a network module: K, K + 1 (K is the absorbing value) and
  D unless the module sets num_outputs / num_input_classes / num_steps (other output distributions, upscale)."""
  return (
    net.num_outputs or net.num_classes,
    net.num_input_classes or net.num_classes + 1,
    net.num_steps or int(np.prod(net.data_shape)),
  )


def sinusoidal_embedding(t_B: jax.Array, dim: int, max_period: float = 10_000.0, endpoint: bool = False) -> jax.Array:
  """Transformer-style sin/cos features: t_B float [B] -> float32 [B, dim] ([sin | cos] halves).

  Frequencies run geometrically from 1 towards 1 / max_period; `endpoint=True` includes 1 / max_period itself
  (the tensor2tensor position table of the official text8 Transformer), otherwise it stops one step short (the
  DDPM time embedding). ValueError if dim is odd.
  """
  if dim % 2:
    raise ValueError(f"sinusoidal embedding width must be even, got {dim}; use an even width")
  half = dim // 2
  steps = max(half - 1, 1) if endpoint else half
  freqs_F = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / steps)
  args_BxF = t_B.astype(jnp.float32)[:, None] * freqs_F[None, :]
  return jnp.concatenate([jnp.sin(args_BxF), jnp.cos(args_BxF)], axis=-1)


def numeric_value(x_in: jax.Array, num_classes: int) -> jax.Array:
  """Class ids as numbers: int x_in, values 0..K-1 -> float32 on [-1, 1] (same shape), so a conv sees their order.

  Ids >= K (the absorbing value, augmented upscale states) have no place on the number line and read 0; the
  known-mask and the learned id embedding beside this input tell them apart. The official input layers scale by
  2 / K instead of 2 / (K - 1) (their in-range absorbing value K / 2 lands on 0, as here); a fixed linear
  rescaling that the first convolution absorbs.
  """
  value = x_in.astype(jnp.float32) * (2.0 / (num_classes - 1)) - 1.0
  return jnp.where(x_in < num_classes, value, 0.0)


class TimeEmbedding(nn.Module):
  """Step t in 0..num_steps-1 -> [B, out_dim] via sinusoid -> Dense -> swish -> Dense.

  t is rescaled to t / num_steps * 1000 so that the sinusoid frequencies see the same
  range whatever the number of variables (64 digits sub-pixels or 3072 CIFAR ones).

  Attributes:
    num_steps: the range of t (D, or S * D for an upscale ARDM).
    sin_dim: width of the sinusoid features (even).
    hidden_dim: width of the first Dense.
    out_dim: width of the output.
    dtype: compute dtype.
  """

  num_steps: int
  sin_dim: int
  hidden_dim: int
  out_dim: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, t_B: jax.Array) -> jax.Array:
    """Embeds t_B, int [B], as [B, out_dim] in `dtype`."""
    t_scaled_B = t_B.astype(jnp.float32) * (1000.0 / self.num_steps)
    h_BxT = sinusoidal_embedding(t_scaled_B, self.sin_dim)
    h_BxM = dense(self.hidden_dim, ("time", "mlp"), dtype=self.dtype, name="dense_0")(h_BxT)
    h_BxM = nn.swish(h_BxM)
    return dense(self.out_dim, ("mlp", "embed"), dtype=self.dtype, name="dense_1")(h_BxM)


class HeadSplit(nn.Module):
  """[B, N, E] -> [B, N, H, Dh]; the q/k/v projection.

  Written with a full-rank kernel instead of nn.DenseGeneral: DenseGeneral initialises
  a flattened 2-D kernel, which breaks the 3-name logical annotation as soon as a mesh
  and axis rules are active (sharded init/apply would fail).

  Attributes:
    num_heads: H.
    head_dim: Dh.
    dtype: compute dtype (kernel and bias are float32).
  """

  num_heads: int
  head_dim: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x_BxNxE: jax.Array) -> jax.Array:
    """Projects x [B, N, E] to [B, N, H, Dh] in `dtype`."""
    init = nn.initializers.lecun_normal(in_axis=0, out_axis=(1, 2))
    kernel_ExHxK = self.param(
      "kernel",
      partitioned(init, ("embed", "heads", "kv")),
      (x_BxNxE.shape[-1], self.num_heads, self.head_dim),
      jnp.float32,
    )
    bias_HxK = self.param(
      "bias", partitioned(nn.initializers.zeros, ("heads", "kv")), (self.num_heads, self.head_dim), jnp.float32
    )
    y = jnp.einsum("bne,ehk->bnhk", x_BxNxE.astype(self.dtype), kernel_ExHxK.astype(self.dtype))
    return y + bias_HxK.astype(self.dtype)[None, None, :, :]


class HeadMerge(nn.Module):
  """[B, N, H, Dh] -> [B, N, E]; the attention output projection (see HeadSplit for why).

  Attributes:
    features: E.
    dtype: compute dtype.
    zero_init: start the kernel at zero (a residual branch that starts as the identity).
  """

  features: int
  dtype: Dtype = jnp.float32
  zero_init: bool = False

  @nn.compact
  def __call__(self, x_BxNxHxK: jax.Array) -> jax.Array:
    """Projects x [B, N, H, Dh] to [B, N, E] in `dtype`."""
    init = nn.initializers.zeros if self.zero_init else nn.initializers.lecun_normal(in_axis=(0, 1), out_axis=2)
    _, _, num_heads, head_dim = x_BxNxHxK.shape
    kernel_HxKxE = self.param(
      "kernel", partitioned(init, ("heads", "kv", "embed")), (num_heads, head_dim, self.features), jnp.float32
    )
    bias_E = self.param("bias", partitioned(nn.initializers.zeros, ("embed",)), (self.features,), jnp.float32)
    y = jnp.einsum("bnhk,hke->bne", x_BxNxHxK.astype(self.dtype), kernel_HxKxE.astype(self.dtype))
    return y + bias_E.astype(self.dtype)[None, None, :]


def rotary(x_BxNxHxK: jax.Array, max_period: float = 10_000.0) -> jax.Array:
  """Rotary position embedding (Su et al., 2021): rotates feature pairs by position-dependent angles, so q . k
  depends on the positions' difference. x: [B, N, H, Dh] -> same shape and dtype; ValueError if Dh is odd.
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
  """Multi-head attention q, k, v [B, N, H, Dh] -> [B, N, H, Dh] in v's dtype; logits and softmax in float32.

  `causal`: query q sees keys n <= q only. `impl`: one of ATTENTION_IMPLS (ValueError otherwise).
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
  """

  num_heads: int
  dtype: Dtype = jnp.float32
  zero_init_out: bool = False
  causal: bool = False
  rope: bool = False
  impl: str = "plain"

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
      y = HeadSplit(self.num_heads, head_dim, dtype=self.dtype, name=name)(x_BxNxE)
      return constrain(y, act_names)

    q_BxNxHxK, k_BxNxHxK, v_BxNxHxK = qkv("query"), qkv("key"), qkv("value")
    if self.rope:
      q_BxNxHxK, k_BxNxHxK = rotary(q_BxNxHxK), rotary(k_BxNxHxK)
    out_BxNxHxK = dot_product_attention(q_BxNxHxK, k_BxNxHxK, v_BxNxHxK, causal=self.causal, impl=self.impl)
    out_BxNxHxK = constrain(out_BxNxHxK, act_names)
    return HeadMerge(emb_dim, dtype=self.dtype, zero_init=self.zero_init_out, name="out")(out_BxNxHxK)
