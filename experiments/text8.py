"""OA-ARDM on text8 with the paper's Transformer (12 layers, width 768, MLP 3072, 12 heads), crops of 250.

Command (download http://mattmahoney.net/dc/text8.zip first; TPU/GPU):
  ardm train --config experiments/text8.py --workdir gs://BUCKET/ardm/text8 --config.data.path=/data/text8.zip
Expected (paper, the target; not measured with this code): 1.43 ± 0.001 bits/char with 250 steps, 1.51 ± 0.007
with a 20-step policy (section 5, Table 1), after 3M steps. Hardware and time: the paper reports about a week on
4 TPUv4 (App. D), a v4-8 slice, which this config fits with 58% of HBM free; `ardm preflight --topology v4-8` puts
the whole run at 154 h at roofline speed (the paper's week is 92% of it; compute alone would take 53 h).
`experiments/text8.py:tiny` is a smoke variant.

Every value below names its source: "paper" is arXiv 2110.02037, "official" is the paper's code
(google-research/google-research autoregressive_diffusion/experiments/language/: configs/default.py, train.py,
architectures/transformer.py), used where the paper is silent. Departures from both are marked DEPARTURE.
"""

import ml_collections

from ardm_jax.configs import base_config, shrink_to_tiny


def get_config(variant: str = "default"):
  config = base_config()
  config.data.name = "text8"  # paper App. D: text8, 90M / 5M / 5M characters
  config.data.path = None  # operational: where text8.zip lies (required on the command line)
  config.data.seq_len = 250  # paper App. D: chunks of 250 characters; official seq_length=250
  config.model.name = "transformer"
  config.model.num_layers = 12  # paper App. D: 12 layers, 768 dimensions, 12 heads, MLP 3072
  config.model.emb_dim = 768
  config.model.mlp_dim = 3072
  config.model.num_heads = 12
  config.model.dropout = 0.0  # paper App. D: no dropout for the ARDMs; official dropout_rate=0
  config.model.positions = "sinusoidal"  # paper App. D: "All models use a sinusoidal positional embedding"
  # paper section 3: for language the absorbed values are a new class, "no need to provide the mask"; official
  # transformer.py takes neither the mask nor t (condition_time=False)
  config.model.time_input = False
  config.model.mask_input = False
  # official configs/default.py kernel_init='xavier' -> train.py model_setup: nn.initializers.xavier_uniform for the
  # kernels of every attention, MLP and the logits layer (transformer.py TransformerConfig.kernel_init). Their biases
  # start at 0 here, at N(0, 1e-6) there (model_setup's bias_init): a 1e-6 difference, not worth an option.
  config.model.kernel_init = "xavier_uniform"
  # official transformer.py EncoderDecoder1DBlock: nn.SelfAttention(use_bias=False), no q, k, v or output biases
  config.model.attention_bias = False
  # DEPARTURE (input table): the absorbing value is the extra id K = 27 and the token table has a row for it
  # (sized by the input classes). The official model's table has output_vocab_size rows and its absorbing id 28
  # lies past the end (2021 JAX clamped it onto 'z'; current JAX returns NaN).
  config.model.dtype = "float32"  # official use_bfloat16=False (paper silent)
  # operational: which blocks recompute their activations in the backward pass (REMAT_CHOICES in
  # ardm_jax/nets/layers.py); a FieldReference so True / False from older command lines still assign.
  # The paper's hardware, 4 TPUv4 chips (v4-8, 32 GiB each; `ardm preflight --topology v4-8`, libtpu AOT,
  # scan_layers=True): 'none' and 'attention' run out of HBM (35.12 GB of temporaries), dots_with_no_batch_dims_
  # saveable peaks at 13.50 GiB (42%) for 1.9% more FLOPs than no remat (7.03e13 against 6.90e13 per step). On
  # v5e-16 (16 GiB chips): none 12.78 GiB, attention 10.80, dots_with_no_batch_dims_saveable 5.23, full 2.99.
  config.model.remat = ml_collections.FieldReference("dots_with_no_batch_dims_saveable", field_type=object)
  config.model.attention_impl = "auto"  # operational: cuDNN flash attention on GPUs where it applies, else XLA
  config.model.scan_layers = True  # operational: one compiled Transformer layer, scanned 12 times (nn.scan)
  config.ardm.ce_weight = 1e-4  # paper App. D: CE factor 0.0001; official ce_term=0.0001
  # official configs/default.py elbo_mode='uniform' (its 'antithetic' is 'stratified' here); paper silent
  config.ardm.t_sampling = "uniform"
  config.optim.learning_rate = 5e-4  # paper App. D
  config.optim.warmup_steps = 5000  # paper App. D: linear warm-up over the first 5000 steps, then constant
  config.optim.schedule = "constant"  # official lr_factors='constant * linear_warmup'
  config.optim.b1 = 0.9  # official train.py: optax.adamw(b1=0.9, b2=0.99, eps=1e-8) (paper: "Adam")
  config.optim.b2 = 0.99  # official train.py
  config.optim.weight_decay = 0.001  # official weight_decay=0.001 (paper silent)
  config.optim.clip_norm = 0.25  # paper App. D: gradient clipped at 0.25
  # paper App. D: EMA momentum 0.995 for evaluation (the official code falls back to 0.999; the paper wins)
  config.optim.ema_decay = 0.995
  # official language_train_state.py TrainState.apply_gradients: a constant EMA momentum from step 0, starting at the
  # initial parameters; no warm-up (paper silent)
  config.optim.ema_warmup = False
  config.train.batch_size = 512  # paper App. D
  config.train.num_steps = 3_000_000  # paper App. D: 3e6 steps (official num_train_steps = 5,000,000)
  config.train.checkpoint_every = 10_000  # official checkpoint_every_steps
  config.train.eval_batch_size = 200  # official test_batch_size=200
  # Held-out progress at the official cadence (eval_every_steps=1000). The official loop evaluates the whole
  # validation and test splits (20,000 chunks each); 2,000 chunks (500,000 characters, 10 batches of 200, about
  # 0.1% of the training compute in between) give a standard error near 0.003 bits/char.
  config.train.eval_every = 1000
  config.train.eval_items = 2000
  if variant == "tiny":
    shrink_to_tiny(config)
  elif variant != "default":
    raise ValueError(f"unknown variant {variant!r} for text8; use 'default' or 'tiny'")
  return config
