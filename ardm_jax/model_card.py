"""The model card of a model folder (README.md in the usual hub layout) and the push to the hub.

`model_dir.export` writes the card from the folder's config.json entries, the workdir's eval*.json results of the
exported step and the recorded training commands; `push` uploads a written folder (the optional `hub` extra), which
`--model hf:ORG/NAME` opens again (ardm_jax/hub.py).
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
import json
import os
import socket
from urllib.parse import urlparse

from ardm_jax.configs import POLICY_FILE, TRAIN_COMMANDS_FILE

HUB_TIMEOUT_S = 10.0


def eval_results(workdir: str, step: int, params_kind: str) -> list[dict]:
  """The workdir's eval*.json results of this step and parameter kind (the model card's numbers)."""
  results = []
  for name in sorted(os.listdir(workdir)):
    if not (name.startswith("eval") and name.endswith(".json")):
      continue
    try:
      with open(os.path.join(workdir, name)) as f:
        r = json.load(f)
    except (OSError, ValueError):
      continue
    if isinstance(r, dict) and r.get("step") == step and r.get("params") == params_kind and "bpd" in r:
      results.append(r | {"file": name})
  return results


def library_version() -> str:
  try:
    return version("ardm_jax")
  except PackageNotFoundError:  # not installed as a distribution
    return "unknown"


def train_commands(workdir: str) -> list[str]:
  path = os.path.join(workdir, TRAIN_COMMANDS_FILE)
  if not os.path.isfile(path):
    return []
  with open(path) as f:
    return [line.strip() for line in f if line.strip()]


_PIPELINE_TAGS = {"image": "unconditional-image-generation", "text": "text-generation"}


def model_card(
  meta: dict,
  evals: list[dict],
  commands: list[str],
  *,
  license_id: str = "unknown",
  repo_id: str | None = None,
  name: str = "model",
  has_policy: bool = False,
) -> str:
  """README.md of a model folder: YAML front matter (hub metadata: library, license, tags, data set, metrics and a
  model-index with the measured held-out numbers), then what the model is and how to use it."""
  spec, cfg, training = meta["data_spec"], meta["config"], meta["training"]
  kind, data_name = spec["kind"], spec["name"]
  unit = {"text": "bits/char", "audio": "bits/sample"}.get(kind, "bits/dim")
  objective = training.get("objective", "ardm")
  up = cfg["ardm"].get("upscale", "none")
  what = {
    "ardm": "order-agnostic ARDM" + ("" if up in (None, "none") else f", upscale ({up})"),
    "arm": "single-order ARM baseline",
    "d3pm_absorbing": "D3PM-absorbing baseline",
  }.get(objective, objective)
  q = json.dumps  # JSON strings are YAML strings
  lines = ["---", "library_name: ardm_jax", f"license: {q(license_id)}", "tags:"]
  lines += [f"- {q(t)}" for t in ("ardm", "autoregressive-diffusion", "jax", "flax", kind, "lossless-compression")]
  if kind in _PIPELINE_TAGS:
    lines.append(f"pipeline_tag: {_PIPELINE_TAGS[kind]}")
  lines += ["datasets:", f"- {q(data_name)}", "metrics:", "- bits_per_dim"]
  if evals:
    lines += ["model-index:", f"- name: {q(repo_id or name)}", "  results:"]
    for r in evals:
      label = f"{r.get('split', 'test')} {r.get('unit', unit)}, {r.get('passes', 1)} pass(es)" + (
        f", budget {r['budget']}" if r.get("budget") else ""
      )
      lines += [
        "  - task:",
        "      type: density-estimation",
        "      name: likelihood (negative ELBO)",
        "    dataset:",
        f"      name: {q(data_name)}",
        f"      type: {q(data_name)}",
        f"      split: {q(r.get('split', 'test'))}",
        "    metrics:",
        "    - type: bits_per_dim",
        f"      value: {round(float(r['bpd']), 4)}",
        f"      name: {q(label)}",
      ]
  lines.append("---")
  lines += [
    "",
    f"# {name}: {what} on {data_name}",
    "",
    f"An Autoregressive Diffusion Model (Hoogeboom et al., ICLR 2022) trained with "
    f"ardm_jax: a `{cfg['model'].get('name')}` network over "
    f"{kind} items of shape {tuple(spec['shape'])} with {spec['num_classes']} classes per variable, "
    f"{meta['params']['count']:,} parameters ({meta['params']['kind'].upper()} weights of training step "
    f"{meta['step']}).",
    "",
  ]
  lines += ["## Results", ""]
  if evals:
    lines += [f"| split | {unit} | ± stderr | passes | network calls |", "|---|---|---|---|---|"]
    for r in evals:
      calls = r.get("budget") or f"{spec_num_steps(spec)} (one per variable)"
      lines.append(
        f"| {r.get('split', 'test')} | {float(r['bpd']):.4f} | {float(r.get('stderr', 0)):.4f} | "
        f"{r.get('passes', '')} | {calls} |"
      )
  else:
    lines.append("Not evaluated at this step; measure it with the command under Usage.")
  lines += ["", "## Training", ""]
  t = training.get("train", {})
  optim = training.get("optim", {})
  lines.append(
    f"{meta['step']} steps of batch {t.get('batch_size')} (of {t.get('num_steps')} planned), "
    f"learning rate {optim.get('learning_rate')} ({optim.get('schedule')}), EMA decay "
    f"{optim.get('ema_decay')}, seed {training.get('seed')}; training config hash `{meta['config_hash']}`."
  )
  lines.append("")
  if commands:
    lines += ["Trained with:", "", "```", *commands, "```"]
  else:
    lines.append("The training command was not recorded in the workdir (trained before `ardm train` recorded it).")
  # Pushed, the model opens by its hub name (downloaded once into the hub cache); otherwise from its folder.
  folder = f"hf:{repo_id}" if repo_id else "MODEL_DIR"
  install = "`pip install -e '.[hub]'`" if repo_id else "`pip install -e .`"
  lines += ["", "## Usage", "", f"With ardm_jax installed ({install} in its repository):", "", "```"]
  lines += [
    f"ardm eval --model {folder} --out eval.json" + (" --data-path DATA" if training.get("data_file") else ""),
    f"ardm sample --model {folder} --num 16 --out samples{_sample_ext(kind)}",
  ]
  if objective == "ardm":
    lines += [
      f"ardm compress --model {folder} INPUT... -o files.ardm",
      f"ardm decompress --model {folder} files.ardm -o restored/",
    ]
  lines.append("```")
  if repo_id:
    lines += [
      "",
      f"`--model hf:{repo_id}` downloads this repository into the Hugging Face cache once and opens the cached copy "
      f"from then on, also offline; `--model hf:{repo_id}@REVISION` pins a branch, tag or commit. A local copy: "
      f"`hf download {repo_id} --local-dir MODEL_DIR`, then `--model MODEL_DIR`.",
    ]
  lines += [
    "",
    f"Files compressed with this model carry its fingerprint `{meta['fingerprint'][:16]}...`; they decode with "
    "this folder or with the workdir it was exported from.",
  ]
  if has_policy:
    lines += [
      "",
      f"`{POLICY_FILE}` holds the DP-optimal parallel policies: add `--budget B` to sample, eval or "
      "compress for B network calls instead of one per variable.",
    ]
  return "\n".join(lines) + "\n"


def spec_num_steps(spec: dict) -> int:
  n = 1
  for s in spec["shape"]:
    n *= int(s)
  return n


def _sample_ext(kind: str) -> str:
  return {"image": ".png", "text": ".txt"}.get(kind, "")


# --------------------------------------------------------------------------------------------------------------
# The hub


def check_reachable(endpoint: str, timeout: float = HUB_TIMEOUT_S) -> None:
  """Fails fast (one line, `timeout` seconds at most) when the hub's host cannot be reached."""
  url = urlparse(endpoint)
  port = url.port or (443 if url.scheme == "https" else 80)
  try:
    socket.create_connection((url.hostname, port), timeout=timeout).close()
  except OSError as err:
    raise ValueError(
      f"cannot reach {endpoint} ({err}); the model folder is written, push it later with "
      "`ardm export --push` from the workdir or `hf upload REPO_ID FOLDER`"
    ) from None


def hub_module(needed_by: str = "--push"):
  """The huggingface_hub module, or a one-line ValueError saying what `needed_by` it and how to install it."""
  try:
    # Imported here: huggingface_hub is an optional extra (`pip install 'ardm_jax[hub]'`), needed only by --push and
    # by --model hf:ORG/NAME (ardm_jax/hub.py).
    import huggingface_hub  # noqa: PLC0415
  except ImportError:
    raise ValueError(f"{needed_by} needs huggingface_hub: pip install 'ardm_jax[hub]'") from None
  try:
    # A lazy submodule: `huggingface_hub.constants` (HF_ENDPOINT, HF_HUB_OFFLINE as the user set them) is an
    # attribute only once something has imported it; the push and ardm_jax/hub.py both read it.
    import huggingface_hub.constants  # noqa: F401, PLC0415
  except ImportError:  # a stand-in module without submodules (the tests' fake hubs) carries its own
    pass
  return huggingface_hub


def push(folder: str, repo_id: str, *, step: int, private: bool = False) -> str:
  """Uploads the model folder of training step `step` to the hub repository `repo_id` (created if missing);
  returns its URL."""
  hub = hub_module()
  endpoint = getattr(getattr(hub, "constants", None), "ENDPOINT", None) or "https://huggingface.co"
  check_reachable(endpoint)
  api = hub.HfApi()
  try:
    url = api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
    api.upload_folder(
      folder_path=folder,
      repo_id=repo_id,
      repo_type="model",
      commit_message=f"ardm export of step {step}",
    )
  except Exception as err:  # pylint: disable=broad-except  (auth, repository name, HTTP, connection: one line)
    first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    raise ValueError(f"pushing {folder} to {repo_id} failed: {first}") from None
  return str(url)
