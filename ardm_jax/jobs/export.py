"""`ardm export`: a workdir's checkpoint as a portable model folder (ardm_jax/model_dir.py), optionally pushed."""

from __future__ import annotations

import time

from ardm_jax import model_card, model_dir
from ardm_jax.jobs import options


def add_parser(sub) -> None:
  p = sub.add_parser(
    "export",
    description="a portable model folder (safetensors parameters, config.json, policy, model "
    "card) that every job takes as --model",
  )
  p.add_argument("--workdir", required=True, help="the training workdir to export from")
  options.add_step(p)
  p.add_argument("--raw", action="store_true", help="export the raw parameters instead of the EMA ones")
  options.add_out(p, "the model folder to write (must not exist or be empty)", required=True, short=True)
  p.add_argument("--license", default="unknown", help="license id for the model card (e.g. apache-2.0, cc-by-4.0)")
  p.add_argument(
    "--push",
    metavar="REPO_ID",
    default=None,
    help="also upload the folder to this hub repository (needs `pip install 'ardm_jax[hub]'` and a login)",
  )
  p.add_argument("--private", action="store_true", help="with --push: create the repository private")


def run(args) -> None:
  if args.push:
    model_card.hub_module()  # before the export: a missing extra is reported at once
  start = time.time()
  r = model_dir.export(args.workdir, args.out, step=args.step, raw=args.raw, license_id=args.license, repo_id=args.push)
  mb = 1 / 1e6
  print(
    f"exported {r['params']} parameters of step {r['step']} ({r['num_params']:,}) to {r['out']} in "
    f"{time.time() - start:.1f}s: " + ", ".join(f"{n} {b * mb:.2f} MB" for n, b in r["files"].items())
  )
  ratio = r["folder_bytes"] / r["checkpoint_bytes"] if r["checkpoint_bytes"] else float("nan")
  print(
    f"model folder {r['folder_bytes'] * mb:.2f} MB; the workdir's checkpoint of step {r['step']} "
    f"{r['checkpoint_bytes'] * mb:.2f} MB ({100 * ratio:.0f}%); fingerprint {r['fingerprint'][:16]}"
  )
  if args.push:
    print(f"pushed to {model_card.push(args.out, args.push, step=r['step'], private=args.private)}")
