"""What every job that runs a trained model does first: the compilation cache, then opening the model.

`--workdir W | --model DIR` and `--step` (jobs/options.py) choose the model; `open_model` opens it through
`model_dir.open_trained` (a workdir's checkpoint or an exported folder) and `enable_compile_cache` points JAX's
persistent cache where the model's config says, before anything compiles.
"""

from __future__ import annotations

from etils import epath

from ardm_jax import compile_cache, configs, model_dir


def open_model(args, **kwargs):
  """The trained model of --workdir or --model at --step (ardm_jax/model_dir.py)."""
  return model_dir.open_trained(
    args.workdir, args.model, step=args.step, data_path=getattr(args, "data_path", None), **kwargs
  )


def enable_compile_cache(workdir_path: str | None = None, config=None) -> None:
  """The persistent compilation cache of a job on `workdir_path` (the config it was trained with) or of `config`.

  Reads only config.json: a missing or broken workdir is left to the job's own error message."""
  if config is None and workdir_path is not None:
    path = epath.Path(workdir_path) / configs.CONFIG_FILE
    try:
      config = configs.config_from_json(path) if path.is_file() else None
    except ValueError:  # unreadable JSON: the job reports it
      config = None
  compile_cache.enable(config)
