# Shared helpers for the launch scripts (sourced, not run).
#   require VAR...   stop with one line naming every unset variable and what it is for
#   run CMD...       print the command, then run it (only print it when DRY_RUN=1)

# Every variable a script may require, with a one-line description for the error message.
declare -A ARDM_VAR_HELP=(
  [PROJECT]="Google Cloud project id"
  [ZONE]="zone with TPU quota, e.g. us-central2-b (v4) or us-west4-a (v5e)"
  [TPU_NAME]="name of the TPU VM (or queued resource) to create and use"
  [ACCELERATOR_TYPE]="slice type, e.g. v4-32, v5litepod-16, v6e-8"
  [RUNTIME_VERSION]="TPU VM image, e.g. tpu-ubuntu2204-base (v4), v2-alpha-tpuv5-lite (v5e), v2-alpha-tpuv6e (v6e)"
  [RUN_NAME]="name of the run; its log is ~/ardm_logs/RUN_NAME.log on every worker"
  [COORDINATOR_ADDRESS]="HOST:PORT of process 0, reachable from every node"
  [NUM_PROCESSES]="total number of processes"
  [PROCESS_ID]="index of this process, 0..NUM_PROCESSES-1"
)

require() {
  local missing=() var
  for var in "$@"; do
    [[ -n "${!var:-}" ]] || missing+=("$var")
  done
  if ((${#missing[@]})); then
    echo "$(basename "$0"): missing required variable(s):" >&2
    for var in "${missing[@]}"; do
      echo "  $var  (${ARDM_VAR_HELP[$var]:-see the script header})" >&2
    done
    echo "export them (or prefix the command with VAR=value) and rerun; DRY_RUN=1 only prints the commands" >&2
    exit 2
  fi
}

run() {
  printf '+'; printf ' %q' "$@"; printf '\n'
  if [[ "${DRY_RUN:-0}" == 1 ]]; then
    return 0
  fi
  "$@"
}

# gcloud arguments shared by every TPU VM command.
tpu_flags() {
  echo --project="$PROJECT" --zone="$ZONE"
}
