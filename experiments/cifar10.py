"""OA-ARDM on CIFAR-10 (tfds) with the paper's U-Net: one resolution, 32 ResBlocks of 256 channels, attention.

Command (TPU v4-16, the paper's 8 TPUv4 chips, or 8 GPUs; prepare the data first with `tfds build cifar10` on a machine with internet):
  ardm train --config experiments/cifar10.py --workdir gs://BUCKET/ardm/cifar10
Expected (paper, the target; not measured with this code): 2.69 bits/dim with 3072 steps (App. B.1, Table 6), 2.74
with a 50-step policy (the CIFAR-10 results table of section 5), after 3,000 epochs, WITH data augmentation
(flips and quarter turns): the paper does not state it for the OA-ARDM, but it compares this 2.69 with the Upscale
ARDM's 2.64, which was trained with augmentation (App. B.4, Fig. 8a: about 2.71 without it, and that unaugmented
model also had dropout). `--config.data.augment=none` gives the official config's default instead.
Time: not measured with this code; the paper reports about 2 weeks on 8 TPUv4 (App. D), a v4-16 slice, which this
config fits with 70% of HBM free; `ardm preflight --topology v4-16` puts the whole run at 56 h at roofline speed (the
paper's 2 weeks is 17% of it).
`experiments/cifar10.py:tiny` is a smoke variant.

Every value below names its source: "paper" is arXiv 2110.02037, "official" is the paper's code
(google-research/google-research autoregressive_diffusion/experiments/images/: config.py, datasets.py, train.py,
architectures/unet.py, model/architecture_components/input_embedding.py), used where the paper is silent.
Departures from both are marked DEPARTURE with the reason.
"""

import ml_collections

from ardm_jax.configs import base_config, shrink_to_tiny

TRAIN_IMAGES = 50_000
BATCH_SIZE = 128  # paper App. D
EPOCHS = 3_000  # paper App. D ("trained for 3000 epochs"); the official config.py has num_epochs = 6000
STEPS_PER_EPOCH = TRAIN_IMAGES // BATCH_SIZE  # 390, the official loop's epoch (drop_remainder=True)


def get_config(variant: str = "default"):
  config = base_config()
  config.data.name = "cifar10"  # paper App. D: CIFAR-10 with the usual 50,000 / 10,000 split
  config.data.tfds_data_dir = None  # operational: tfds's default folder
  config.data.download = False  # operational: an unprepared data set is an error, never a silent download
  # Random flip, then k * 90 degrees with k uniform on 0..3 (official datasets.py, data_augmentation=True; its
  # config.py defaults to False). On here because the paper's CIFAR-10 numbers are the augmented ones (docstring).
  config.data.augment = "flip_rot90"
  config.model.name = "unet"
  config.model.ch = 256  # paper App. D: 256 channels throughout; official n_channels=256
  config.model.num_res_blocks = 32  # paper App. D: 32 ResBlocks at 32x32 down, 32 (+1) up; official ch_mult=[1]
  # Official input layer (paper App. D; official input_embedding.py): conv3x3 on the values scaled to [-1, 1] plus
  # the mask -> 3/4 of ch, and Embed(input classes, ch/4) per colour channel, flattened, Dense -> ch/4.
  config.model.input_numeric = True
  config.model.input_embed_dim = 64  # ch / 4 per colour channel, as the official Embed(num_classes, ch // 4)
  # official input_embedding.py InputProcessingImage: that nn.Embed keeps flax's default initialiser,
  # variance_scaling(1.0, 'fan_in', 'normal', out_axis=0), i.e. N(0, 1 / 64) entries: std 1/8
  config.model.input_embed_std = 0.125
  # official time_embedding.py get_timestep_embedding (Fairseq / tensor2tensor form): frequencies
  # exp(-ln(10^4) i / (half - 1)) for i < half = ch / 2, of t * 1000 / num_steps
  config.model.time_endpoint = True
  config.model.num_heads = 1  # official num_heads=1
  # Official unet.py: attention after every 32x32 ResBlock (32 is in attn_resolutions) plus the middle one, 66 in
  # all. The paper's App. D describes "a single middle attention layer" (the VDM network); this net follows the
  # released code and has no middle-only option.
  config.model.attention = True
  config.model.dropout = 0.0  # official dropout=0.
  # DEPARTURE: bf16 matmuls (the official model runs in float32) for about twice the speed on TPU/GPU; the U-Net
  # keeps its residual stream and output head in float32, so the logits are not rounded to bf16.
  config.model.dtype = "bfloat16"
  # operational: which blocks recompute their activations in the backward pass (REMAT_CHOICES in
  # ardm_jax/nets/layers.py); a FieldReference so True / False from older command lines still assign.
  # The paper's hardware, 8 TPUv4 chips (v4-16, 32 GiB each; `ardm preflight --topology v4-16`, libtpu AOT,
  # scan_layers=True): 'attention' peaks at 30.79 GiB per chip (96%: no room for the runtime), fsdp over the 8
  # chips at 33.27 GiB; dots_with_no_batch_dims_saveable at 9.64 GiB (30%), recomputing the convolutions (they are
  # not dots). With 16 chips (v4-32, per-device batch 8) 'attention' leaves 48% free (16.75 GiB) and is faster.
  config.model.remat = ml_collections.FieldReference("dots_with_no_batch_dims_saveable", field_type=object)
  config.model.attention_impl = "auto"  # operational: cuDNN flash attention on GPUs where it applies, else XLA
  config.model.scan_layers = True  # operational: one compiled ResBlock+Attn unit per half (nn.scan)
  config.ardm.ce_weight = 1e-3  # paper App. D: CE objective with a factor of 0.001; official ce_term=0.001
  # official config.py elbo_mode='uniform' (its alternative 'antithetic' is this codebase's 'stratified'): t drawn
  # independently per example (paper silent)
  config.ardm.t_sampling = "uniform"
  config.optim.learning_rate = 1e-4  # paper App. D
  config.optim.b1 = 0.9  # paper App. D: Adam betas 0.9 / 0.999
  config.optim.b2 = 0.999  # paper App. D; official beta2=0.999
  config.optim.weight_decay = 0.0  # official train.py: optax.adam, no weight decay (paper: plain Adam)
  config.optim.schedule = "constant"  # official train.py: a constant learning rate
  config.optim.warmup_steps = 0  # official: no warm-up (paper silent)
  config.optim.clip_norm = 100.0  # paper App. D: gradient clipped at 100
  config.optim.ema_decay = 0.9999  # paper App. D: EMA momentum 0.9999 for evaluation
  # official custom_train_state.py TrainState.apply_gradients: ema = m * ema + (1 - m) * params with the constant m
  # from step 0, starting at the initial parameters; no warm-up (paper silent)
  config.optim.ema_warmup = False
  config.train.batch_size = BATCH_SIZE
  # 3,000 epochs of example draws (1,171,875 steps; the official loop drops each epoch's last partial batch, 390
  # steps per epoch, 1,170,000 steps for 3,000 epochs).
  config.train.num_steps = EPOCHS * TRAIN_IMAGES // BATCH_SIZE
  config.train.log_every = 100  # operational
  config.train.checkpoint_every = 2 * STEPS_PER_EPOCH  # official save_every=2 epochs
  config.train.eval_passes = 4  # official num_eval_passes=4 (paper App. D: "multiple dataset passes")
  config.train.eval_batch_size = 200  # official test_batch_size=200 (divides the 10,000 test images)
  # Held-out progress every epoch, as the official loop evaluates after every epoch. 1,000 of the 10,000 test images
  # (5 batches of 200, under 1% of an epoch's compute) give a standard error of about 0.01 bits/dim, enough to see
  # progress; the official loop's 4 passes over all 10,000 would cost 40 times more every epoch.
  config.train.eval_every = STEPS_PER_EPOCH
  config.train.eval_items = 1000
  if variant == "tiny":
    shrink_to_tiny(config)
  elif variant != "default":
    raise ValueError(f"unknown variant {variant!r} for cifar10; use 'default' or 'tiny'")
  return config
