"""Pieces shared by the ARDM networks: annotated layers, time embedding (attention: `attention`).

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
  """The compute dtype named by model.dtype; parameters stay float32.

  Args:
    name: model.dtype, 'float32' or 'bfloat16'.

  Returns:
    jnp.float32 or jnp.bfloat16.

  Raises:
    ValueError: `name` is neither.
  """
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
  """Reads model.remat as one of REMAT_CHOICES.

  Args:
    value: model.remat: a name in REMAT_CHOICES, True / False (older configs) or None.

  Returns:
    The name; True reads as 'full', False and None as 'none'.

  Raises:
    ValueError: `value` is any other value.
  """
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
  """nn.scan over `length` copies of a module.

  Parameters gain a leading axis of size `length`, named SCAN_AXIS for the sharding rules; params and dropout
  draw a different key per layer, as separate unrolled layers do.

  Args:
    body: `body(module, carry, *xs) -> (carry, ys)`, called with each copy of the module.
    length: the number of layers.
    in_axes: nn.scan's, for the extra inputs `xs` (nn.broadcast: the same input for every layer).
    out_axes: nn.scan's, for the outputs `ys`.

  Returns:
    The scanned module class, as nn.scan returns it.
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


# model.kernel_init: the initialiser of the weight kernels a network lets the option choose (its docstring names
# them). 'lecun_normal' (flax's default) is what older checkpoints were initialised with.
KERNEL_INITS = ("lecun_normal", "xavier_uniform", "kaiming_normal")


def kernel_initializer(name: str, in_axis=-2, out_axis=-1):
  """The flax initialiser named by model.kernel_init.

  Args:
    name: one of KERNEL_INITS: 'lecun_normal' (truncated normal, variance 1 / fan_in), 'xavier_uniform' (uniform
      on +-sqrt(6 / (fan_in + fan_out))) or 'kaiming_normal' (truncated normal, variance 2 / fan_in).
    in_axis: the kernel's input axis or axes (their sizes times the other, receptive-field axes give fan_in).
    out_axis: the kernel's output axis or axes (fan_out).

  Returns:
    The initialiser.

  Raises:
    ValueError: `name` is not one of KERNEL_INITS.
  """
  if name not in KERNEL_INITS:
    raise ValueError(f"unknown model.kernel_init {name!r}; set it to one of {list(KERNEL_INITS)}")
  return getattr(nn.initializers, name)(in_axis=in_axis, out_axis=out_axis)


def partitioned(init_fn, names: Sequence[str]):
  """Annotates an initialiser with logical axis names, for the sharding rules.

  Args:
    init_fn: a flax initialiser.
    names: one logical axis name per parameter axis (from PARAM_AXIS_NAMES).

  Returns:
    `init_fn` wrapped by nn.with_logical_partitioning.
  """
  return nn.with_logical_partitioning(init_fn, tuple(names))


def constrain(x: jax.Array, names: Sequence[str | None]) -> jax.Array:
  """Constrains an activation's sharding; a no-op without logical-axis rules and a mesh.

  Args:
    x: any array.
    names: one logical axis name per axis of `x` (None: not sharded).

  Returns:
    x, same shape and dtype, constrained to `names`.
  """
  return nn.with_logical_constraint(x, tuple(names))


def dense(
  features: int,
  names: tuple[str, str],
  *,
  dtype: Dtype,
  zero_init: bool = False,
  kernel_init: str = "lecun_normal",
  name: str | None = None,
) -> nn.Dense:
  """Dense layer computing in `dtype`, float32 kernel annotated `names` (in, out), bias `names[1:]`.

  Args:
    features: output width.
    names: the logical names of the kernel's (in, out) axes.
    dtype: compute dtype.
    zero_init: start the kernel at zero (a residual branch or output head that starts at 0); the bias always
      starts at zero.
    kernel_init: otherwise the kernel's initialiser, one of KERNEL_INITS.
    name: the module name.

  Returns:
    An unbound nn.Dense mapping [..., in] to [..., features] in `dtype`.
  """
  init = nn.initializers.zeros if zero_init else kernel_initializer(kernel_init)
  return nn.Dense(
    features,
    dtype=dtype,
    param_dtype=jnp.float32,
    kernel_init=partitioned(init, names),
    bias_init=partitioned(nn.initializers.zeros, names[1:]),
    name=name,
  )


def conv3x3(
  features: int, *, dtype: Dtype, out_axis: str = "embed", zero_init: bool = False, name: str | None = None
) -> nn.Conv:
  """`conv` with a 3x3 kernel.

  Args:
    features: output channels.
    dtype: compute dtype.
    out_axis: the logical name of the output channel axis.
    zero_init: start the kernel at zero.
    name: the module name.

  Returns:
    An unbound nn.Conv mapping [B, H, W, C] to [B, H, W, features] in `dtype`.
  """
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

  Args:
    features: output channels.
    kernel_size: (height, width) of the kernel.
    dtype: compute dtype.
    out_axis: the logical name of the output channel axis (kernel and bias).
    zero_init: start the kernel at zero instead of lecun-normal; the bias (annotated (out_axis,)) starts at zero.
    name: the module name.

  Returns:
    An unbound nn.Conv mapping [B, H, W, C] to [B, H, W, features] in `dtype`.
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

  Args:
    num_channels: the channels of the input.
    dtype: compute dtype (scale and bias are float32, annotated ('embed',)).
    max_groups: the most groups.
    name: the module name.

  Returns:
    An unbound nn.GroupNorm (at least one group).
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
  """Embedding table [num_rows, features], float32, N(0, stddev) init, annotated ('vocab', 'embed').

  Args:
    num_rows: the number of ids.
    features: the embedding width.
    dtype: compute dtype.
    stddev: the standard deviation of the initial entries.
    name: the module name.

  Returns:
    An unbound nn.Embed mapping int ids [...] to [..., features] in `dtype`.
  """
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

  Args:
    x_in: the class ids, int [B, *data_shape].
    known: the known-mask, x_in's shape.
    t: the steps, [B].
    data_shape: the shape of one item.

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
  """The sizes a network module's layers are built for.

  Args:
    net: a network module with num_classes (K) and data_shape, and num_outputs / num_input_classes / num_steps
      (None unless set: other output distributions, upscale).

  Returns:
    (outputs per variable, input ids, time steps): K, K + 1 (K is the absorbing value) and D unless the module
    sets num_outputs / num_input_classes / num_steps.
  """
  return (
    net.num_outputs or net.num_classes,
    net.num_input_classes or net.num_classes + 1,
    net.num_steps or int(np.prod(net.data_shape)),
  )


def stage_onehot(net, t_B: jax.Array) -> jax.Array | None:
  """The upscale stage s = t_net // D of each item as a float32 one-hot (the official S extra mask channels).

  Args:
    net: a network module with stage_input, num_stages (None or 1: one stage) and num_steps (S * D).
    t_B: int [B], the global steps t_net = s * D + t the network already gets: deriving s from them keeps the
      call signature of every caller (training, evaluation, sampling, coding).

  Returns:
    float32 [B, S]; None unless net.stage_input is on and S > 1.

  Raises:
    ValueError: if S does not divide num_steps.
  """
  stages, num_steps = net.num_stages or 1, output_input_step_sizes(net)[2]
  if not net.stage_input or stages < 2:
    return None
  if num_steps % stages:
    raise ValueError(f"model.stage_input needs num_steps = S * D, got {num_steps} steps for S = {stages} stages")
  return jax.nn.one_hot(t_B // (num_steps // stages), stages, dtype=jnp.float32)


def sinusoidal_embedding(t_B: jax.Array, dim: int, max_period: float = 10_000.0, endpoint: bool = False) -> jax.Array:
  """Transformer-style sin/cos features.

  Frequencies run geometrically from 1 towards 1 / max_period: exp(-ln(max_period) * i / n) for i < half = dim / 2,
  with n = half - 1 (endpoint) or n = half.

  Args:
    t_B: float [B] (any real dtype; cast to float32), the times or positions.
    dim: the feature width (even).
    max_period: the longest period.
    endpoint: n = half - 1, so the last frequency is 1 / max_period itself: the Fairseq / tensor2tensor form, used
      by DDPM's time embedding (`get_timestep_embedding`), the official ARDM code's time embedding
      (`time_embedding.get_timestep_embedding`) and its text8 position table. Otherwise n = half, stopping one
      step short, as OpenAI's improved-diffusion `timestep_embedding` does (which orders the halves [cos | sin]);
      the form the networks here used before model.time_endpoint existed.

  Returns:
    float32 [B, dim], [sin | cos] halves.

  Raises:
    ValueError: dim is odd.
  """
  if dim % 2:
    raise ValueError(f"sinusoidal embedding width must be even, got {dim}; use an even width")
  half = dim // 2
  steps = max(half - 1, 1) if endpoint else half
  freqs_F = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / steps)
  args_BxF = t_B.astype(jnp.float32)[:, None] * freqs_F[None, :]
  return jnp.concatenate([jnp.sin(args_BxF), jnp.cos(args_BxF)], axis=-1)


def numeric_value(x_in: jax.Array, num_classes: int) -> jax.Array:
  """Class ids as numbers on [-1, 1], so a conv sees their order.

  Ids >= K (the absorbing value, augmented upscale states) have no place on the number line and read 0; the
  known-mask and the learned id embedding beside this input tell them apart. The official input layers scale by
  2 / K instead of 2 / (K - 1) (their in-range absorbing value K / 2 lands on 0, as here); a fixed linear
  rescaling that the first convolution absorbs.

  Args:
    x_in: int class ids, any shape; values 0..K-1, or >= K.
    num_classes: K.

  Returns:
    float32, x_in's shape: values 0..K-1 mapped linearly onto [-1, 1], 0 for ids >= K.
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
    endpoint: the sinusoid's frequency spacing (`sinusoidal_embedding`; model.time_endpoint).
  """

  num_steps: int
  sin_dim: int
  hidden_dim: int
  out_dim: int
  dtype: Dtype = jnp.float32
  endpoint: bool = False

  @nn.compact
  def __call__(self, t_B: jax.Array) -> jax.Array:
    """Embeds t_B, int [B], as [B, out_dim] in `dtype`."""
    t_scaled_B = t_B.astype(jnp.float32) * (1000.0 / self.num_steps)
    h_BxT = sinusoidal_embedding(t_scaled_B, self.sin_dim, endpoint=self.endpoint)
    h_BxM = dense(self.hidden_dim, ("time", "mlp"), dtype=self.dtype, name="dense_0")(h_BxT)
    h_BxM = nn.swish(h_BxM)
    return dense(self.out_dim, ("mlp", "embed"), dtype=self.dtype, name="dense_1")(h_BxM)
