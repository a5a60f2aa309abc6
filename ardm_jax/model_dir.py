"""Trained models as portable folders: `ardm export` writes one, `--model DIR` opens one for every job.

A model folder holds what the jobs (eval, policy, sample, inpaint, compress, decompress) use and nothing of the
training run (no optimizer state, no second copy of the parameters, no L_t tracker, no paths of the machine it
was trained on):

  config.json        `format` (the kind marker, "ardm_jax.model") and `format_version`; `config`: the network
                     (`model`), `ardm` and `data` sections that rebuild the model, less machine-specific keys (data
                     paths, the tfds folder) plus `train.eval_batch_size` (the jobs' batch, which the coder's
                     batching follows); `data_spec`; `config_hash`, the hash of the whole training config, which
                     the model fingerprint covers (so containers written with the workdir decode with the folder
                     and vice versa); `fingerprint`; `step`; `params` (file, 'ema' or 'raw', SHA-256, count);
                     `training` (the optimizer and schedule settings, for the record).
  model.safetensors  the parameters, one tensor per leaf named by its path in the tree ('down_0/conv/kernel'),
                     dtypes as trained (safetensors: a JSON header and raw little-endian bytes; nothing pickled)
  policy.json        the workdir's DP policies, when it had one (the jobs' default policy file, as in a workdir)
  README.md          a model card in the usual hub layout (YAML front matter, then text)

Opening a folder needs only the core dependencies. The network is rebuilt from config.json on a mesh of all local
devices (parameters replicated, whatever mesh trained them), every tensor is checked against the network's abstract
parameters (name, shape, dtype), and each device reads its slice of the memory-mapped file.

The model card and the hub push are `model_card.py`; the command is `jobs/export.py`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile

import jax
import ml_collections
import numpy as np
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save_file

from ardm_jax import configs
from ardm_jax import workdir as workdir_lib
from ardm_jax.checkpoint import CHECKPOINT_DIR
from ardm_jax.coding_model import model_fingerprint
from ardm_jax.configs import CONFIG_FILE, DATA_SPEC_FILE, MODEL_FORMAT, POLICY_FILE
from ardm_jax.model_card import eval_results, library_version, model_card, train_commands
from ardm_jax.train_state import DataSpec, build_setup
from ardm_jax.workdir import TrainedModel

FORMAT_VERSION = 1
PARAMS_FILE = "model.safetensors"
CARD_FILE = "README.md"
# Keys of config.data that locate the data on one machine: not exported (`--data-path` supplies a path).
MACHINE_DATA_KEYS = ("path", "tfds_data_dir", "download")


def open_trained(
  workdir: str | None = None,
  model_dir: str | None = None,
  *,
  use_ema: bool = True,
  step: int | str | None = None,
  data_path: str | None = None,
  devices=None,
):
  """The trained model (a workdir.TrainedModel) of a workdir or of a model folder, on a mesh of `devices`
  (default all); the jobs take either."""

  if (workdir is None) == (model_dir is None):
    raise ValueError("pass exactly one of --workdir and --model")
  if model_dir is None:
    if data_path is not None:
      raise ValueError("--data-path is for --model; a workdir's config.json says where its data lies")
    return workdir_lib.open_workdir(workdir, use_ema=use_ema, step=step, devices=devices)
  if step is not None or not use_ema:
    raise ValueError(
      "--step and --raw choose among a workdir's checkpoints; a model folder holds one set of "
      "parameters (export another with `ardm export --step N` or `--raw`)"
    )
  return open_model_dir(model_dir, data_path=data_path, devices=devices)


def trained_spec(workdir: str | None = None, model_dir: str | None = None):
  """The model's DataSpec from the files alone (cheap: jobs check their inputs before loading the model)."""

  if model_dir is not None:
    return DataSpec.from_json(read_meta(model_dir)["data_spec"])
  path = os.path.join(workdir, DATA_SPEC_FILE)
  if not os.path.isfile(path):
    if _is_model_folder(workdir):
      raise ValueError(f"{workdir} is an exported model folder, not a training workdir; pass it as --model")
    raise ValueError(
      f"{workdir} is not a training workdir (no {DATA_SPEC_FILE}); train first with "
      f"`ardm train --config ... --workdir {workdir}`"
    )
  with open(path) as f:
    return DataSpec.from_json(json.load(f))


# --------------------------------------------------------------------------------------------------------------
# Reading


def _is_model_folder(path: str) -> bool:
  try:
    with open(os.path.join(path, CONFIG_FILE)) as f:
      meta = json.load(f)
  except (OSError, ValueError):
    return False
  return isinstance(meta, dict) and meta.get("format") == MODEL_FORMAT


def read_meta(model_dir: str) -> dict:
  """config.json of a model folder, checked for its kind, version and keys (one-line ValueErrors)."""
  path = os.path.join(model_dir, CONFIG_FILE)
  if not os.path.isdir(model_dir):
    raise ValueError(f"model folder {model_dir} does not exist")
  if not os.path.isfile(path):
    raise ValueError(
      f"{path} is missing: {model_dir} is not a model folder (write one with `ardm export --workdir W -o {model_dir}`)"
    )
  try:
    with open(path) as f:
      meta = json.load(f)
  except ValueError as err:
    raise ValueError(f"{path} is damaged: not valid JSON ({err})") from None
  if not isinstance(meta, dict) or meta.get("format") != MODEL_FORMAT:
    if os.path.isfile(os.path.join(model_dir, DATA_SPEC_FILE)):
      raise ValueError(
        f"{model_dir} is a training workdir, not a model folder; pass it as --workdir, or write a "
        f"model folder with `ardm export --workdir {model_dir} -o DIR`"
      )
    found = meta.get("format") if isinstance(meta, dict) else None
    raise ValueError(
      f"{path} is not an ardm_jax model (format {found!r}, expected {MODEL_FORMAT!r}): a model of "
      "another kind or library"
    )
  version = meta.get("format_version")
  if not isinstance(version, int) or version > FORMAT_VERSION or version < 1:
    raise ValueError(
      f"{path} has format_version {version!r}; this ardm_jax reads versions 1..{FORMAT_VERSION} "
      "(upgrade ardm_jax to read newer folders)"
    )
  for key, kind in (("config", dict), ("data_spec", dict), ("config_hash", str), ("step", int), ("params", dict)):
    if not isinstance(meta.get(key), kind):
      raise ValueError(f"{path} is damaged: its {key!r} entry is missing or not a {kind.__name__}")
  for key in ("model", "ardm", "data"):
    if not isinstance(meta["config"].get(key), dict):
      raise ValueError(f"{path} is damaged: its config has no {key!r} section")
  if meta["params"].get("kind") not in ("ema", "raw") or not isinstance(meta["params"].get("file"), str):
    raise ValueError(f"{path} is damaged: its 'params' entry needs 'file' and 'kind' ('ema' or 'raw')")
  return meta


def model_config(meta: dict, data_path: str | None = None):
  """The ConfigDict the jobs build from: the defaults, with the folder's model, ardm and data sections (and
  eval batch). The mesh and sharding rules are the defaults (parameters replicated over all devices)."""

  saved = meta["config"]
  config = configs.base_config()
  config.model = ml_collections.ConfigDict(saved["model"])
  config.ardm.update(saved["ardm"])  # keys added after the export keep their defaults, as when a workdir resumes
  config.data = ml_collections.ConfigDict(saved["data"])
  if data_path is not None:
    config.data.path = str(data_path)
  for key, value in saved.get("train", {}).items():
    config.train[key] = value
  config.lock()
  return config


def open_model_dir(model_dir: str, data_path: str | None = None, devices=None):
  """A model folder as a workdir.TrainedModel: rebuilt from config.json, parameters checked and restored onto a
  mesh of `devices` (default: all)."""

  meta = read_meta(model_dir)
  config = model_config(meta, data_path)
  spec = DataSpec.from_json(meta["data_spec"])
  try:
    setup = build_setup(config, spec, devices)
  except (KeyError, TypeError, AttributeError) as err:
    raise ValueError(f"{os.path.join(model_dir, CONFIG_FILE)}: its config does not build a network ({err!r})") from None
  params = load_params(
    os.path.join(model_dir, meta["params"]["file"]),
    setup.abstract_state.params,
    setup.state_shardings.params,
    sha256=meta["params"].get("sha256"),
  )
  return TrainedModel(
    workdir=model_dir,
    setup=setup,
    params=params,
    step=int(meta["step"]),
    params_kind=meta["params"]["kind"],
    config_hash=meta["config_hash"],
    source="model",
  )


def tensor_names(tree) -> list[str]:

  names = []
  for path, _ in jax.tree_util.tree_leaves_with_path(tree):
    parts = []
    for key in path:
      if not isinstance(key, jax.tree_util.DictKey) or "/" in str(key.key):
        raise ValueError(
          f"parameter {jax.tree_util.keystr(path)} is not a path of dict keys without '/'; the "
          "model folder format names tensors by such paths"
        )
      parts.append(str(key.key))
    names.append("/".join(parts))
  return names


def file_sha256(path: str) -> str:
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for chunk in iter(lambda: f.read(1 << 22), b""):
      h.update(chunk)
  return h.hexdigest()


def load_params(path: str, abstract_params, shardings, sha256: str | None = None):
  """The parameter tree of a safetensors file, each tensor checked against `abstract_params` (name, shape, dtype)
  and placed with `shardings`; every device reads only its own slice."""

  if not os.path.isfile(path):
    raise ValueError(f"{path} is missing: the model folder has no parameters file")
  if sha256 is not None and file_sha256(path) != sha256:
    raise ValueError(
      f"{path} is damaged or truncated: its SHA-256 differs from the one in {CONFIG_FILE} "
      f"({os.path.getsize(path)} bytes); copy or download it again"
    )
  leaves, treedef = jax.tree.flatten(abstract_params)
  names = tensor_names(abstract_params)
  flat_shardings = treedef.flatten_up_to(shardings)
  try:
    with safe_open(path, framework="numpy") as f:
      stored = set(f.keys())
      missing = [n for n in names if n not in stored]
      if missing:
        raise ValueError(
          f"{path} lacks tensor {missing[0]!r} ({len(missing)} missing) that the network of {CONFIG_FILE} has"
        )
      extra = sorted(stored - set(names))
      if extra:
        raise ValueError(
          f"{path} has tensor {extra[0]!r} ({len(extra)} extra) that the network of {CONFIG_FILE} does not have"
        )
      arrays = []
      for name, leaf, sharding in zip(names, leaves, flat_shardings):
        view = f.get_slice(name)
        shape, dtype = tuple(view.get_shape()), _dtype_name(view.get_dtype())
        if shape != tuple(leaf.shape) or dtype != np.dtype(leaf.dtype).name:
          raise ValueError(
            f"{path}: tensor {name!r} is {dtype}{list(shape)} but the network of {CONFIG_FILE} "
            f"needs {np.dtype(leaf.dtype).name}{list(leaf.shape)}"
          )
        if not shape:  # a scalar: slices of 0-d views are not supported
          value = f.get_tensor(name)
          arrays.append(jax.make_array_from_callback(shape, sharding, lambda index, v=value: v[index]))
        else:
          arrays.append(
            jax.make_array_from_callback(shape, sharding, lambda index, v=view, d=leaf.dtype: np.asarray(v[index], d))
          )
  except SafetensorError as err:
    raise ValueError(f"{path} is damaged or not a safetensors file ({err})") from None
  return jax.tree.unflatten(treedef, arrays)


_SAFETENSORS_DTYPES = {
  "F64": "float64",
  "F32": "float32",
  "F16": "float16",
  "BF16": "bfloat16",
  "I64": "int64",
  "I32": "int32",
  "I16": "int16",
  "I8": "int8",
  "U8": "uint8",
  "BOOL": "bool",
  "U16": "uint16",
  "U32": "uint32",
  "U64": "uint64",
}


def _dtype_name(code: str) -> str:
  return _SAFETENSORS_DTYPES.get(code, code.lower())


# --------------------------------------------------------------------------------------------------------------
# Writing


def export_config(config) -> dict:
  """The config sections a model folder keeps (see the module docstring)."""
  full = json.loads(config.to_json(sort_keys=True))
  data = {k: v for k, v in full["data"].items() if k not in MACHINE_DATA_KEYS}
  return {
    "model": full["model"],
    "ardm": full.get("ardm", {}),
    "data": data,
    "train": {"eval_batch_size": full["train"]["eval_batch_size"]},
  }


def _checkpoint_bytes(workdir: str, step: int) -> int:

  return _folder_bytes(os.path.join(workdir, CHECKPOINT_DIR, str(step)))


def _folder_bytes(path: str) -> int:
  return sum(os.path.getsize(os.path.join(root, name)) for root, _, files in os.walk(path) for name in files)


def export(
  workdir: str,
  out: str,
  *,
  step: int | str | None = None,
  raw: bool = False,
  license_id: str = "unknown",
  repo_id: str | None = None,
) -> dict:
  """Writes the model folder `out` from a workdir's checkpoint (EMA parameters unless `raw`); refuses an existing
  non-empty `out`. Returns a report: the folder's files and sizes, the checkpoint's size, the fingerprint."""

  if os.path.exists(out) and (not os.path.isdir(out) or os.listdir(out)):
    raise FileExistsError(f"{out} exists and is not an empty folder; choose another -o (export never replaces files)")
  if _is_model_folder(workdir):
    raise ValueError(f"{workdir} is already a model folder; copy it, or pass its training workdir")
  model = workdir_lib.open_workdir(workdir, use_ema=not raw, step=step)
  if jax.process_count() > 1:
    raise ValueError("ardm export runs in one process; it reads the checkpoint on one host")
  names = tensor_names(model.params)
  tensors = {n: np.asarray(jax.device_get(leaf)) for n, leaf in zip(names, jax.tree.leaves(model.params))}
  config = model.config
  meta = {
    "format": MODEL_FORMAT,
    "format_version": FORMAT_VERSION,
    "library_name": "ardm_jax",
    "library_version": library_version(),
    "config_hash": model.config_hash,
    "fingerprint": model_fingerprint(model),
    "step": model.step,
    "params": {
      "file": PARAMS_FILE,
      "kind": model.params_kind,
      "count": int(sum(t.size for t in tensors.values())),
      "sha256": None,
    },
    "data_spec": model.spec.to_json(),
    "config": export_config(config),
    "training": {
      "seed": config.seed,
      "optim": config.optim.to_dict(),
      "train": {k: config.train[k] for k in ("batch_size", "num_steps") if k in config.train},
      "objective": config.ardm.get("objective", "ardm"),
      # which file the data came from (its folder is machine-specific): jobs take --data-path
      "data_file": os.path.basename(str(config.data.path)) if config.data.get("path") else None,
    },
  }
  parent = os.path.dirname(os.path.abspath(out))
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(prefix=".export-", dir=parent)  # complete or absent: renamed into place at the end
  try:
    params_path = os.path.join(tmp, PARAMS_FILE)
    save_file(tensors, params_path, metadata={"format": MODEL_FORMAT, "config_hash": model.config_hash})
    meta["params"]["sha256"] = file_sha256(params_path)
    with open(os.path.join(tmp, CONFIG_FILE), "w") as f:
      json.dump(meta, f, indent=1, sort_keys=True)
      f.write("\n")
    policy_src = os.path.join(workdir, POLICY_FILE)
    if os.path.isfile(policy_src):
      shutil.copyfile(policy_src, os.path.join(tmp, POLICY_FILE))
    evals = eval_results(workdir, model.step, model.params_kind)
    commands = train_commands(workdir)
    with open(os.path.join(tmp, CARD_FILE), "w") as f:
      f.write(
        model_card(
          meta,
          evals,
          commands,
          license_id=license_id,
          repo_id=repo_id,
          name=os.path.basename(os.path.abspath(out)),
          has_policy=os.path.isfile(policy_src),
        )
      )
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp's folder is private; the files get the modes of any new file
    for name in os.listdir(tmp):
      os.chmod(os.path.join(tmp, name), 0o666 & ~umask)
    if os.path.isdir(out):
      os.rmdir(out)  # empty (checked above)
    os.rename(tmp, out)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  files = {name: os.path.getsize(os.path.join(out, name)) for name in sorted(os.listdir(out))}
  return {
    "out": out,
    "files": files,
    "folder_bytes": sum(files.values()),
    "step": model.step,
    "params": model.params_kind,
    "num_params": meta["params"]["count"],
    "checkpoint_bytes": _checkpoint_bytes(workdir, model.step),
    "fingerprint": meta["fingerprint"],
    "config_hash": model.config_hash,
  }
