#!/usr/bin/env bash
# Create (or reuse) a Cloud TPU VM slice and start toto-jax training on every worker.
#
#   launch/tpu_pod.sh --name NAME --zone ZONE --type v5p-64 --config experiments/configs/toto_base.yaml \
#       --workdir gs://BUCKET/run [--version RUNTIME] [--repo URL (default: this checkout's origin)] [--ref REF] [--create] [--dry-run] [-- key=value ...]
#
# Every worker runs the same command; JAX finds the other hosts of the slice by itself
# (toto_jax.distributed.initialize detects TPU_WORKER_HOSTNAMES). --dry-run prints the exact commands.
set -euo pipefail

NAME="" ZONE="" TYPE="" CONFIG="" WORKDIR="" VERSION="v2-alpha-tpuv5" REPO="$(git -C "$(dirname "$0")/.." remote get-url origin 2>/dev/null || true)"
REF="main" CREATE=0 DRY_RUN=0
OVERRIDES=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --name) NAME=$2; shift 2 ;;
    --zone) ZONE=$2; shift 2 ;;
    --type) TYPE=$2; shift 2 ;;
    --config) CONFIG=$2; shift 2 ;;
    --workdir) WORKDIR=$2; shift 2 ;;
    --version) VERSION=$2; shift 2 ;;
    --repo) REPO=$2; shift 2 ;;
    --ref) REF=$2; shift 2 ;;
    --create) CREATE=1; shift ;;
    --dry-run) DRY_RUN=1; shift ;;
    --) shift; OVERRIDES=("$@"); break ;;
    *) echo "$0: unknown option '$1'" >&2; exit 2 ;;
  esac
done
for required in NAME ZONE CONFIG WORKDIR REPO; do
  [[ -n "${!required}" ]] || { echo "$0: --${required,,} is required" >&2; exit 2; }
done
[[ $CREATE -eq 0 || -n "$TYPE" ]] || { echo "$0: --create needs --type" >&2; exit 2; }

run() {
  if ((DRY_RUN)); then printf '%q ' "$@"; echo; else "$@"; fi
}

if ((CREATE)); then
  run gcloud compute tpus tpu-vm create "$NAME" --zone "$ZONE" --accelerator-type "$TYPE" --version "$VERSION"
fi

WORKER_SCRIPT="set -euo pipefail
if [ ! -d toto-jax ]; then git clone $REPO toto-jax; fi
cd toto-jax && git fetch --all && git checkout $REF
python3 -m venv .venv && .venv/bin/pip install -q -U pip && .venv/bin/pip install -q -e '.[tpu,cloud]'
exec .venv/bin/toto-jax train --config $CONFIG --workdir $WORKDIR ${OVERRIDES[*]:-}"

if ((DRY_RUN)); then
  echo "# each worker runs:"
  echo "$WORKER_SCRIPT" | sed 's/^/#   /'
fi
run gcloud compute tpus tpu-vm ssh "$NAME" --zone "$ZONE" --worker=all --command "$WORKER_SCRIPT"
