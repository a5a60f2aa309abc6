"""`ardm train`: train (or resume) a model with `train.train_and_evaluate`; overrides as --config.KEY=VALUE."""

from __future__ import annotations

import os
import shlex

import jax

from ardm_jax import config_checks, configs, distributed
from ardm_jax.jobs import model_source

# The arguments argparse does not know are the config overrides (--config.KEY=VALUE).
TAKES_OVERRIDES = True


def add_parser(sub) -> None:
  p = sub.add_parser("train", description="train (or resume) a model; overrides as --config.KEY=VALUE")
  p.add_argument("--config", required=True, help="experiment file, e.g. experiments/digits.py[:variant]")
  p.add_argument("--workdir", required=True, help="where checkpoints, config.json and metrics go (resumed if present)")
  # Multi-host without a cluster manager; Cloud TPU VMs and SLURM job steps are detected automatically.
  p.add_argument("--coordinator_address", default=None, help="process 0's HOST:PORT (with the next two flags)")
  p.add_argument("--num_processes", type=int, default=None, help="number of processes in the run")
  p.add_argument("--process_id", type=int, default=None, help="this process's index in 0..num_processes-1")


def run(args) -> None:
  # The config first (no JAX): a misspelt key or a bad value is refused in about a second, before anything starts.
  config = configs.apply_overrides(configs.load_config_file(args.config), args.overrides)
  config_checks.check_run_values(config)
  # Before anything touches JAX devices: jax.distributed cannot start afterwards.
  distributed.initialize(args.coordinator_address, args.num_processes, args.process_id)
  model_source.enable_compile_cache(config=config)
  # Imported here: the trainer's metric writers (clu) import TensorFlow, which made `ardm train --help` take 7.9 s
  # instead of about 1.3 s (measured) and print TensorFlow's start-up log.
  from ardm_jax import train  # noqa: PLC0415

  train.train_and_evaluate(config, args.workdir)
  record_train_command(args)


def record_train_command(args) -> None:
  """Appends the command to WORKDIR/train_commands.txt (the model card of `ardm export` quotes it); the process
  flags of a multi-host launch are left out, they say where it ran."""
  if jax.process_index() != 0:
    return
  command = shlex.join(
    ["ardm", "train", "--config", str(args.config), "--workdir", str(args.workdir), *map(str, args.overrides)]
  )
  with open(os.path.join(args.workdir, configs.TRAIN_COMMANDS_FILE), "a") as f:
    f.write(command + "\n")
