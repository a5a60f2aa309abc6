"""OA-ARDM on SC09 (16 kHz, 1 s, 16-bit: 65,536 classes) with a discretised logistic mixture output and the
paper's DiffWave (36 residual blocks of 256 channels, dilations cycling over 12).

Command (GPU/TPU; put speech_commands_v0.02.tar.gz in tfds's manual folder first, see ardm_jax/data/audio.py):
  ardm train --config experiments/sc09.py --workdir gs://BUCKET/ardm/sc09
Expected (paper, the target; not measured with this code): 7.93 bits/dim with D = 16,000 steps (section 5,
Table 4), far above the Upscale ARDMs' 6.29 (experiments/sc09_upscale.py); a single-order WaveNet gets 7.77.
Time: not measured with this code; the paper reports about 4 days of training (App. D, hardware not stated).
`:tiny` is a smoke variant.

Every value below names its source: "paper" is arXiv 2110.02037, "official" is the paper's code
(google-research/google-research autoregressive_diffusion/experiments/audio/: configs/sc09.py, train.py,
arch/diff_wave.py), used where the paper is silent. Departures from both are marked DEPARTURE.
"""

import ml_collections

from ardm_jax.configs import base_config, shrink_to_tiny


def get_config(variant: str = "default"):
  config = base_config()
  config.seed = 42  # official seed=42
  config.data.name = "sc09"  # paper App. D: SC09 digits, 31158 / 3643 / 4107 clips, zero-padded to 1 s at 16 kHz
  config.data.tfds_data_dir = None  # operational: tfds's default folder
  config.data.download = False  # operational: an unprepared data set is an error, never a silent download
  config.model.name = "diffwave"
  config.model.num_blocks = 36  # paper App. D: 36 blocks, 256 channels; official num_blocks=36, features=256
  config.model.features = 256
  # official dilation_cycle=12: dilations 2^(i mod 12), 1..2048 (the paper's "dilation cycle of 11 (i.e. maximum
  # dilation of 2048)" counts the largest exponent)
  config.model.dilation_cycle = 12
  # official arch/diff_wave.py DiffWave / ResGroup / ResBlock kernel_init=nn.initializers.kaiming_normal(): the
  # dilated, residual and skip convolutions and the head's first 1x1 convolution (flower_conv); the input conv and the
  # Dense layers keep flax's default (lecun_normal) there as here, and the output conv starts at zero in both
  config.model.kernel_init = "kaiming_normal"
  # official input_embedding.py InputProcessingAudio: nn.Embed(num_classes, features // 4) with flax's default
  # initialiser, variance_scaling(1.0, 'fan_in', 'normal', out_axis=0), i.e. N(0, 1 / 64) entries: std 1/8
  config.model.input_embed_std = 0.125
  # official time_embedding.py get_timestep_embedding (Fairseq / tensor2tensor form): frequencies
  # exp(-ln(10^4) i / (half - 1)) for i < half = features / 2, of t * 1000 / num_steps
  config.model.time_endpoint = True
  # DEPARTURE: bf16 matmuls (the official model runs in float32) for speed on 16,000-sample clips; the residual
  # stream, the skip sum and the output head stay float32.
  config.model.dtype = "bfloat16"
  # operational: which blocks recompute their activations in the backward pass (REMAT_CHOICES in
  # ardm_jax/nets/layers.py); a FieldReference so True / False from older command lines still assign.
  # 'full', measured with libtpu for v4-32 (benchmarks/compile_and_step.py, RESULTS.md): 24.75 GiB per chip (77%);
  # 'none' needs 31.96 GiB of temporaries and does not fit, and 'dots_with_no_batch_dims_saveable' saves nothing
  # here (the convolutions are not dots: the same 24.75 GiB).
  config.model.remat = ml_collections.FieldReference("full", field_type=object)
  config.model.scan_layers = True  # operational: one compiled dilation cycle of 12 blocks, scanned 3 times
  # DEPARTURE (absorbing value): the extra id K = 65536 with its own embedding row (value channel 0, the middle of
  # the number line) instead of the official in-range 32768, so the embedding tells it from real data.
  config.ardm.output = "logistic_mixture"  # paper App. D: mixture of discretized logistics; official output
  config.ardm.num_mixtures = 30  # paper App. D: 30 components; official num_mixtures=30
  config.ardm.ce_weight = 1e-4  # paper App. D: CE weight 1e-4; official ce_term=0.0001
  # official configs/sc09.py and sc09_upscale.py elbo_mode='uniform' (their 'antithetic' is 'stratified' here);
  # paper silent
  config.ardm.t_sampling = "uniform"
  config.optim.learning_rate = 1e-4  # paper App. D; official base_learning_rate=1e-4
  config.optim.b1 = 0.9  # paper App. D: Adam betas 0.9 / 0.999
  config.optim.b2 = 0.999  # paper App. D; official beta2=0.999
  config.optim.weight_decay = 0.0  # official weight_decay=0. (paper: "no further regularisation")
  config.optim.schedule = "constant"
  # paper App. D: "a linear learning rate warm-up over the first 15000 steps followed by a constant learning
  # rate". The official config lists warmup_steps=15000 but its schedule factors='constant' never applies it; the
  # paper states the warm-up, so it is kept.
  config.optim.warmup_steps = 15_000
  config.optim.clip_norm = 1000.0  # paper App. D: gradients with L2 norm above 1000 re-normalised; official
  config.optim.ema_decay = 0.995  # paper App. D: EMA momentum 0.995; official ema_momentum=0.995
  # official train.py uses language_train_state.py TrainState.apply_gradients: that momentum, constant from step 0,
  # starting at the initial parameters; no warm-up (paper silent)
  config.optim.ema_warmup = False
  config.train.batch_size = 256  # paper App. D; official batch_size=256
  config.train.num_steps = 1_000_000  # paper App. D: 1e6 steps; official num_train_steps
  config.train.log_every = 1000  # official log_every_steps=1000
  config.train.checkpoint_every = 5000  # official checkpoint_every_steps=5000
  config.train.eval_batch_size = 512  # official eval_batch_size=512
  config.train.eval_passes = 32  # official num_eval_passes=32
  # Held-out progress at the official cadence (eval_every_steps=2500). The official loop runs 32 passes over all
  # 3,643 validation clips each time (about 6% of the training compute); 1,024 clips, one pass (2 batches of 512,
  # well under 1%) are enough to follow progress.
  config.train.eval_every = 2500
  config.train.eval_items = 1024
  if variant == "tiny":
    shrink_to_tiny(config)
  elif variant != "default":
    raise ValueError(f"unknown variant {variant!r} for sc09; use 'default' or 'tiny'")
  return config
