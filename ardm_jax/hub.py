"""Models opened by name: `--model hf:ORG/NAME[@REVISION]` is a model folder (`ardm export`) on the Hugging Face hub.

`local_folder` turns the name into the snapshot folder huggingface_hub keeps in the user's hub cache (HF_HUB_CACHE,
by default ~/.cache/huggingface/hub), downloading what is missing; the jobs call it once, at their start
(`jobs/options.resolve_model`), and from then on open that folder like any local one, with every check of
model_dir.py (format version, SHA-256 of the parameters, tensor names and shapes). A cached copy opens offline: on a
connection failure (or with HF_HUB_OFFLINE=1) the cache alone answers. Each failure is one ValueError line: a
malformed name, huggingface_hub missing (the optional `hub` extra), no such repo or revision, not cached and no hub.

The download comes in two steps so that a name that is not an ardm_jax model costs one small file: config.json
first, its `format` checked, then the rest of the repository. The cached folder is never written into
(`refuse_writes_into`): huggingface_hub shares its files between revisions and checks nothing when it reads them.
"""

from __future__ import annotations

import json
import os
import re

from ardm_jax import model_card
from ardm_jax.configs import CONFIG_FILE, MODEL_FORMAT

PREFIX = "hf:"
NAME_FORM = "hf:ORG/NAME[@REVISION]"
_NAME = re.compile(r"([A-Za-z0-9][\w.-]*)/([A-Za-z0-9][\w.-]*)(?:@(\S+))?")
# Exception class names (anywhere in an error's MRO) that mean the hub could not be reached: huggingface_hub's own
# (OfflineModeIsEnabled, LocalEntryNotFoundError: its answer when the cache lacks the files after a failed call)
# and those of the HTTP clients it has used (httpx, requests) and of the standard library.
_UNREACHABLE = {
  "ConnectionError",
  "ConnectError",
  "TransportError",
  "TimeoutException",
  "Timeout",
  "TimeoutError",
  "OfflineModeIsEnabled",
  "LocalEntryNotFoundError",
}
_REASON_CHARS = 200


def is_hub_name(text: str | None) -> bool:
  return isinstance(text, str) and text.startswith(PREFIX)


def parse_name(name: str) -> tuple[str, str | None]:
  """(repo_id, revision or None) of `hf:ORG/NAME[@REVISION]`."""
  m = _NAME.fullmatch(name[len(PREFIX) :]) if is_hub_name(name) else None
  if m is None:
    raise ValueError(
      f"{name!r} is not a hub model name: expected {NAME_FORM} (e.g. hf:me/digits or hf:me/digits@v1), or a "
      "local folder"
    )
  return f"{m.group(1)}/{m.group(2)}", m.group(3)


def local_folder(name: str) -> str:
  """The local snapshot folder of the hub model `name` (downloaded into the hub cache unless it is there)."""
  repo_id, revision = parse_name(name)
  hub = model_card.hub_module(f"--model {name}")
  folder = _snapshot(hub, name, repo_id, revision, allow_patterns=[CONFIG_FILE])
  _check_format(name, folder)
  return _snapshot(hub, name, repo_id, revision, allow_patterns=None)


def refuse_writes_into(folder: str, out: str | None, name: str) -> None:
  """Refuses an output path inside the cached snapshot `folder` of `name` (or anywhere in its repo's cache)."""
  if out is None:
    return
  snapshots = os.path.dirname(os.path.realpath(folder))
  guarded = os.path.dirname(snapshots) if os.path.basename(snapshots) == "snapshots" else os.path.realpath(folder)
  path = os.path.abspath(out)
  path = os.path.join(os.path.realpath(os.path.dirname(path)), os.path.basename(path))  # not the link's target
  if path == guarded or path.startswith(guarded + os.sep):
    raise ValueError(
      f"{out} is inside the hub cache's copy of {name}; nothing is written into a downloaded model (choose "
      "another --out)"
    )


def _check_format(name: str, folder: str) -> None:
  try:
    with open(os.path.join(folder, CONFIG_FILE)) as f:
      found = json.load(f).get("format")
  except (OSError, ValueError, AttributeError):
    found = None
  if found != MODEL_FORMAT:
    raise ValueError(
      f"{name} is not an ardm_jax model folder (its {CONFIG_FILE} has format {found!r}, expected "
      f"{MODEL_FORMAT!r}); only folders written by `ardm export` open with --model"
    )


def _snapshot(hub, name: str, repo_id: str, revision: str | None, allow_patterns) -> str:
  """hub.snapshot_download, from the cache alone when offline or when the hub cannot be reached."""
  kwargs = {
    "revision": revision,
    "allow_patterns": allow_patterns,
    "library_name": "ardm_jax",
    "library_version": model_card.library_version(),
  }
  offline = bool(getattr(getattr(hub, "constants", None), "HF_HUB_OFFLINE", False))
  try:
    return str(hub.snapshot_download(repo_id, local_files_only=offline, **kwargs))
  except Exception as err:  # pylint: disable=broad-except  (every failure of the hub library is one line)
    if offline or not _unreachable(err):
      raise _one_line(name, err, offline) from None
    first = err
  try:
    return str(hub.snapshot_download(repo_id, local_files_only=True, **kwargs))
  except Exception as err:  # pylint: disable=broad-except
    raise _one_line(name, first if _unreachable(err) else err, False) from None


def _class_names(err: BaseException) -> set[str]:
  return {c.__name__ for c in type(err).__mro__}


def _unreachable(err: BaseException) -> bool:
  return bool(_class_names(err) & _UNREACHABLE)


def _first_line(err: BaseException) -> str:
  text = str(err).strip()
  line = text.splitlines()[0] if text else type(err).__name__
  return line if len(line) <= _REASON_CHARS else line[: _REASON_CHARS - 3] + "..."


def _one_line(name: str, err: Exception, offline: bool) -> ValueError:
  """The ValueError a user reads for a failed download of `name`."""
  names = _class_names(err)
  if "HFValidationError" in names:
    return ValueError(f"{name} is not a valid hub repo name ({_first_line(err)}); expected {NAME_FORM}")
  if "GatedRepoError" in names:
    return ValueError(f"{name} is a gated repo: accept its conditions on its hub page and log in with `hf auth login`")
  if "RepositoryNotFoundError" in names:
    return ValueError(
      f"{name}: no such model repo on the hub (check the name, or log in with `hf auth login` for a private repo)"
    )
  if "RevisionNotFoundError" in names:
    return ValueError(f"{name}: the repo has no such revision (a branch, tag or commit after '@')")
  if offline or _unreachable(err):
    cause = err.__cause__ if "LocalEntryNotFoundError" in names and err.__cause__ is not None else err
    reason = "HF_HUB_OFFLINE is set" if offline or "OfflineModeIsEnabled" in _class_names(cause) else _first_line(cause)
    cached = "is only partly" if "IncompleteSnapshotError" in names else "is not"
    return ValueError(
      f"{name} {cached} in the local hub cache and the hub cannot be reached ({reason}); connect, or pass a local "
      "folder with --model DIR"
    )
  status = getattr(getattr(err, "response", None), "status_code", None)
  if status in (401, 403):
    return ValueError(f"{name}: the hub refused access ({_first_line(err)}); log in with `hf auth login`")
  return ValueError(f"{name}: downloading from the hub failed ({type(err).__name__}: {_first_line(err)})")
