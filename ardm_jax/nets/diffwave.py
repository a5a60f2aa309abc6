"""DiffWave (Kong et al., 2021) for audio ARDMs: a stack of dilated, gated, non-causal residual blocks.

The paper's SC09 network: 36 blocks of 256 channels with dilations 1, 2, ..., 2048 cycling every 12 blocks, so
each output sees the whole 1 s clip. Inputs are both the value as a number in [-1, 1] (3/4 of the input channels,
through a width-3 convolution together with the known-mask) and a learned embedding of the class id (the other
1/4), so the absorbing value and augmented upscale states, which have no numeric meaning, are still told apart.
With `stage_input=True` an upscale model's mask gets S more channels, a one-hot of the stage (the official input).
Every block adds a projection of the step embedding, applies tanh(conv) * sigmoid(conv) and emits a residual and
a skip output; the skip outputs, summed over blocks, feed two 1x1 convolutions, the last zero-initialised so the
untrained network predicts the distribution's zero-output default. With a bf16 compute dtype the residual
stream, the skip sum and that output head stay float32.

    net(x_in [B, L] int, known [B, L] bool, t [B] int, train) -> float32 [B, L, num_outputs]

num_outputs defaults to K (categorical logits); a discretised logistic mixture needs 3 * M, an upscale ARDM
`Upscale.num_outputs`. num_input_classes defaults to K + 1 (K is the absorbing value) and num_steps (the range
of t the time embedding is scaled to) to L.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ardm_jax.nets import layers

_ACT_3D = ("batch", "act_length", "act_embed")


def conv1d(
  features: int,
  kernel: int,
  *,
  dtype: Any,
  dilation: int = 1,
  out_axis: str = "embed",
  zero_init: bool = False,
  kernel_init: str = "lecun_normal",
  name: str | None = None,
) -> nn.Conv:
  """'SAME'-padded 1-D convolution whose kernel is annotated ('conv_w', 'conv_in', out_axis).

  Args:
    features: output channels.
    kernel: the kernel width.
    dtype: compute dtype (kernel and bias are float32).
    dilation: the kernel dilation.
    out_axis: the logical name of the output channel axis (kernel and bias).
    zero_init: start the kernel at zero; the bias always starts at zero.
    kernel_init: otherwise the kernel's initialiser, one of layers.KERNEL_INITS (fan_in: kernel x in channels).
    name: the module name.

  Returns:
    An unbound nn.Conv mapping [B, L, C] to [B, L, features] in `dtype`.
  """
  init = nn.initializers.zeros if zero_init else layers.kernel_initializer(kernel_init)
  return nn.Conv(
    features,
    (kernel,),
    kernel_dilation=(dilation,),
    padding="SAME",
    dtype=dtype,
    param_dtype=jnp.float32,
    kernel_init=layers.partitioned(init, ("conv_w", "conv_in", out_axis)),
    bias_init=layers.partitioned(nn.initializers.zeros, (out_axis,)),
    name=name,
  )


class ResidualBlock(nn.Module):
  """x + step projection -> dilated conv to 2F -> tanh * sigmoid -> (residual 1x1, skip 1x1).

  Attributes:
    features: F, the residual channels.
    skip_features: channels of the skip output.
    kernel_size: width of the dilated convolution.
    dilation: its dilation.
    dropout: dropout rate after the gate.
    deterministic: no dropout; an attribute, not a call argument, so nn.remat needs no static args.
    dtype: compute dtype of the block's convolutions.
    kernel_init: the initialiser of the dilated, residual and skip convolutions, one of layers.KERNEL_INITS.
  """

  features: int
  skip_features: int
  kernel_size: int
  dilation: int
  dropout: float
  deterministic: bool
  dtype: Any = jnp.float32
  kernel_init: str = "lecun_normal"

  @nn.compact
  def __call__(self, x_BxLxF: jax.Array, temb_BxT: jax.Array) -> tuple[jax.Array, jax.Array]:
    """x [B, L, F], time embedding temb [B, T] -> (float32 [B, L, F] residual stream, [B, L, skip_features] skip).

    The new stream is (x + residual) / sqrt(2); the skip output is in `dtype`.
    """
    step_BxF = layers.dense(self.features, ("mlp", "embed"), dtype=self.dtype, name="step_proj")(nn.swish(temb_BxT))
    h = x_BxLxF + step_BxF[:, None, :]
    # One convolution for both gate halves: the same as two convolutions of F outputs each.
    g = conv1d(
      2 * self.features,
      self.kernel_size,
      dilation=self.dilation,
      out_axis="mlp",
      dtype=self.dtype,
      kernel_init=self.kernel_init,
      name="dilated_conv",
    )(h)
    g = layers.constrain(g, ("batch", "act_length", "act_mlp"))
    y = jnp.tanh(g[..., : self.features]) * nn.sigmoid(g[..., self.features :])
    y = nn.Dropout(self.dropout)(y, deterministic=self.deterministic)
    residual = conv1d(self.features, 1, dtype=self.dtype, kernel_init=self.kernel_init, name="residual")(y)
    skip = conv1d(self.skip_features, 1, dtype=self.dtype, kernel_init=self.kernel_init, name="skip")(y)
    # The residual stream stays float32 whatever the compute dtype: 36 bf16 roundings of the running sum would
    # cost likelihood. Scaling by 1/sqrt(2) keeps its variance from growing with depth.
    out = (x_BxLxF.astype(jnp.float32) + residual.astype(jnp.float32)) * np.float32(1 / np.sqrt(2.0))
    return layers.constrain(out, _ACT_3D), layers.constrain(skip, _ACT_3D)


class DilationCycle(nn.Module):
  """`cycle` residual blocks with dilations 1, 2, ..., 2^(cycle-1): the unit that model.scan_layers repeats (the
  dilations differ from block to block, so single blocks cannot share one scanned program).

  Attributes:
    features: F, the residual channels.
    skip_features: channels of the skip outputs.
    kernel_size: width of the dilated convolutions.
    cycle: blocks per cycle (model.dilation_cycle).
    dropout: dropout rate in every block.
    deterministic: no dropout.
    dtype: compute dtype.
    remat: one of layers.REMAT_CHOICES, applied to each block.
    in_scan: the cycle is the body of nn.scan (see layers.maybe_remat).
    kernel_init: the blocks' convolution initialiser, one of layers.KERNEL_INITS.
  """

  features: int
  skip_features: int
  kernel_size: int
  cycle: int
  dropout: float
  deterministic: bool
  dtype: Any = jnp.float32
  remat: bool | str = False
  in_scan: bool = False
  kernel_init: str = "lecun_normal"

  @nn.compact
  def __call__(self, carry, temb_BxT: jax.Array):
    """Runs the cycle's blocks on the stream and adds their skip outputs.

    Args:
      carry: (h float32 [B, L, F], skip_sum float32 [B, L, skip_features]).
      temb_BxT: time embedding [B, T].

    Returns:
      The updated (h, skip_sum), same shapes, float32.
    """
    h, skip_sum = carry
    block_cls = layers.maybe_remat(ResidualBlock, self.remat, "block", in_scan=self.in_scan)
    for j in range(self.cycle):
      h, skip = block_cls(
        self.features,
        self.skip_features,
        self.kernel_size,
        2**j,
        self.dropout,
        deterministic=self.deterministic,
        dtype=self.dtype,
        kernel_init=self.kernel_init,
        name=f"block_{j}",
      )(h, temb_BxT)
      skip_sum = skip_sum + skip.astype(jnp.float32)
    return h, skip_sum


class DiffWave(nn.Module):
  """x_in [B, L] in 0..num_input_classes-1, known [B, L], t [B] -> float32 [B, L, num_outputs].

  Attributes:
    num_classes: K data classes: values below K are numbers on [-1, 1].
    data_shape: (L,).
    num_blocks: residual blocks (36 in the paper's SC09 network).
    features: F, residual channels, divisible by 4 (3/4 value channels, 1/4 id embedding at the input).
    dilation_cycle: block i has dilation 2 ** (i % dilation_cycle).
    kernel_size: width of the dilated convolutions.
    skip_features: channels of the skip outputs and the output head; None: F.
    dropout: dropout rate after every gate (only with train=True).
    dtype: compute dtype; the residual stream, the skip sum and the output head stay float32.
    remat: one of layers.REMAT_CHOICES ('attention' remats nothing: there is no attention).
    scan_layers: one nn.scan over the num_blocks / dilation_cycle dilation cycles (params stacked under
      'cycles/block_j', block i = cycle * dilation_cycle + j) instead of block_0 ... block_{num_blocks-1}.
    kernel_init: the initialiser of every block's dilated, residual and skip convolutions and of the head's first
      1x1 convolution (skip_out), one of layers.KERNEL_INITS; the input layers, the Dense layers and the
      zero-initialised output convolution keep theirs.
    input_embed_std: the standard deviation of the id embedding's initial entries.
    time_endpoint: the time embedding's frequency spacing (layers.sinusoidal_embedding's `endpoint`).
    num_outputs: outputs per variable; None: K.
    num_input_classes: rows of the input id table; None: K + 1.
    num_steps: range of t for the time embedding; None: L.
    stage_input: with num_stages S > 1, a one-hot of the stage s = t // (num_steps / S) as S more mask channels
      into conv_in; False (and S = 1) keeps older checkpoints' layout.
    num_stages: S, the upscale stages (t = s * D + t within the stage); None: 1.
  """

  num_classes: int
  data_shape: tuple[int]
  num_blocks: int
  features: int
  dilation_cycle: int = 12
  kernel_size: int = 3
  skip_features: int | None = None
  dropout: float = 0.0
  dtype: Any = jnp.float32
  remat: bool | str = False
  scan_layers: bool = False
  kernel_init: str = "lecun_normal"
  input_embed_std: float = 1.0
  time_endpoint: bool = False
  num_outputs: int | None = None
  num_input_classes: int | None = None
  num_steps: int | None = None
  stage_input: bool = False
  num_stages: int | None = None

  def _sizes(self) -> tuple[int, int, int]:
    (length,) = self.data_shape
    if self.features % 4:
      raise ValueError(
        f"diffwave features must be divisible by 4 (3/4 value channels, 1/4 embedding), got "
        f"{self.features}; use e.g. 64 or 256"
      )
    return layers.output_input_step_sizes(self)

  @nn.compact
  def __call__(self, x_in: jax.Array, known: jax.Array, t: jax.Array, train: bool = False) -> jax.Array:
    """One network call on a batch of partially known clips.

    Args:
      x_in: int [B, L] ids in 0..num_input_classes-1 (data values below K, the absorbing value K).
      known: bool [B, L], the known-mask.
      t: int [B] steps in 0..num_steps-1.
      train: dropout on (needs a 'dropout' rng).

    Returns:
      float32 [B, L, num_outputs]; all zeros at initialisation (the output conv starts at zero).

    Raises:
      ValueError: for inputs of the wrong shape or dtype, features not divisible by 4, an unknown remat, or
        scan_layers with num_blocks not a multiple of dilation_cycle.
    """
    layers.check_inputs(x_in, known, t, self.data_shape)
    num_outputs, num_input_classes, num_steps = self._sizes()
    feats = self.features

    # As the official DiffWave port: sinusoid of width F, then two Dense layers of 4F (256 -> 1024 -> 1024).
    temb_BxT = layers.TimeEmbedding(
      num_steps,
      sin_dim=feats,
      hidden_dim=4 * feats,
      out_dim=4 * feats,
      dtype=self.dtype,
      endpoint=self.time_endpoint,
      name="time_embed",
    )(t)

    # Ids >= K (the absorbing value, augmented states) have no place on the number line: value channel 0.
    value_BxL = layers.numeric_value(x_in, self.num_classes)
    numeric_BxLxM = jnp.stack([value_BxL, known.astype(jnp.float32)], axis=-1)
    stage_BxS = layers.stage_onehot(self, t)
    if stage_BxS is not None:
      # The official mask channels: the known-mask, then the stage one-hot at every sample.
      stage_BxLxS = jnp.broadcast_to(stage_BxS[:, None, :], value_BxL.shape + stage_BxS.shape[-1:])
      numeric_BxLxM = jnp.concatenate([numeric_BxLxM, stage_BxLxS], axis=-1)
    h_num = conv1d(3 * feats // 4, 3, dtype=self.dtype, name="conv_in")(numeric_BxLxM.astype(self.dtype))
    # The official input layer projects the id embedding once more (Embed -> Dense, both F/4 wide).
    h_emb = layers.embed(
      num_input_classes, feats // 4, dtype=self.dtype, stddev=self.input_embed_std, name="input_embed"
    )(x_in)
    h_emb = layers.dense(feats // 4, ("conv_in", "embed"), dtype=self.dtype, name="input_embed_proj")(h_emb)
    h = nn.relu(jnp.concatenate([h_num, h_emb.astype(self.dtype)], axis=-1)).astype(jnp.float32)
    h = layers.constrain(h, _ACT_3D)

    remat = layers.remat_choice(self.remat)
    skip_features = self.skip_features or feats
    skip_sum = jnp.zeros(h.shape[:-1] + (skip_features,), jnp.float32)  # float32, like the residual stream
    if self.scan_layers:
      if self.num_blocks % self.dilation_cycle:
        raise ValueError(
          f"model.scan_layers repeats whole dilation cycles: num_blocks={self.num_blocks} must be a "
          f"multiple of dilation_cycle={self.dilation_cycle}; or set model.scan_layers=False"
        )
      cycle = DilationCycle(
        feats,
        skip_features,
        self.kernel_size,
        self.dilation_cycle,
        self.dropout,
        deterministic=not train,
        dtype=self.dtype,
        remat=remat,
        in_scan=True,
        kernel_init=self.kernel_init,
        name="cycles",
      )
      stack = layers.scan_blocks(
        lambda mdl, carry, temb: (mdl(carry, temb), None),
        self.num_blocks // self.dilation_cycle,
        in_axes=(nn.broadcast,),
      )
      (h, skip_sum), _ = stack(cycle, (h, skip_sum), temb_BxT)
    else:
      block_cls = layers.maybe_remat(ResidualBlock, remat, "block")
      for i in range(self.num_blocks):
        h, skip = block_cls(
          feats,
          skip_features,
          self.kernel_size,
          2 ** (i % self.dilation_cycle),
          self.dropout,
          deterministic=not train,
          dtype=self.dtype,
          kernel_init=self.kernel_init,
          name=f"block_{i}",
        )(h, temb_BxT)
        skip_sum = skip_sum + skip.astype(jnp.float32)
    h = skip_sum * np.float32(1 / np.sqrt(self.num_blocks))
    # The output head runs in float32: bf16 logits would cost likelihood directly.
    h = nn.relu(conv1d(skip_features, 1, dtype=jnp.float32, kernel_init=self.kernel_init, name="skip_out")(h))
    out = conv1d(num_outputs, 1, dtype=jnp.float32, out_axis="vocab", zero_init=True, name="out")(h)
    return layers.constrain(out, ("batch", "act_length", "act_classes"))
