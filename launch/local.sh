#!/usr/bin/env bash
# Run N cooperating JAX processes on this machine (CPU devices), e.g. to rehearse a multi-host job.
#
#   launch/local.sh N [--devices D] [--grace SECONDS] -- COMMAND [ARGS...]
#
# Each process gets TOTO_COORDINATOR_ADDRESS (a free local port), TOTO_NUM_PROCESSES, TOTO_PROCESS_ID,
# JAX_PLATFORMS=cpu and D virtual CPU devices (default 1), and glibc's malloc on transparent huge pages
# (GLIBC_TUNABLES glibc.malloc.hugetlb=1: every step's temporaries otherwise fault in afresh as 4 KB pages, see
# benchmarks/README.md). Output lines are prefixed with "[i] ".
# If any process fails, the others are stopped (TERM, then KILL after the grace period) and the
# script exits with that process's status; it exits 0 only when every process succeeded.
# SIGTERM or SIGINT sent to this script is forwarded to every process, which then stop together (toto-jax
# train saves and exits 75): the script waits for them and exits with their status. A second signal
# stops them as on a failure and exits 130.
set -u -m  # -m: every process runs in its own process group, so its children can be stopped with it

usage() { echo "usage: $0 N [--devices D] [--grace SECONDS] -- COMMAND [ARGS...]" >&2; exit 2; }
[[ $# -ge 3 ]] || usage
N=$1; shift
[[ "$N" =~ ^[1-9][0-9]*$ ]] || { echo "$0: N must be a positive integer, got '$N'" >&2; exit 2; }
DEVICES=1
GRACE=10
while [[ $# -gt 0 && "$1" != "--" ]]; do
  case "$1" in
    --devices) DEVICES=$2; shift 2 ;;
    --grace) GRACE=$2; shift 2 ;;
    *) echo "$0: unknown option '$1'" >&2; usage ;;
  esac
done
[[ "${1:-}" == "--" ]] || usage
shift
[[ $# -ge 1 ]] || usage

PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
declare -A INDEX_OF
PIDS=()
for ((i = 0; i < N; i++)); do
  (
    export TOTO_COORDINATOR_ADDRESS="127.0.0.1:${PORT}" TOTO_NUM_PROCESSES="$N" TOTO_PROCESS_ID="$i"
    export JAX_PLATFORMS=cpu XLA_FLAGS="--xla_force_host_platform_device_count=${DEVICES} ${XLA_FLAGS:-}"
    export GLIBC_TUNABLES="glibc.malloc.hugetlb=1${GLIBC_TUNABLES:+:${GLIBC_TUNABLES}}"
    exec "$@" > >(sed -u "s/^/[$i] /") 2> >(sed -u "s/^/[$i] /" >&2)
  ) &
  PIDS+=($!)
  INDEX_OF[$!]=$i
  echo "[local.sh] process $i pid $! (coordinator 127.0.0.1:${PORT})" >&2
done

stop_all() {
  for pid in "${PIDS[@]}"; do kill -TERM -- "-$pid" 2>/dev/null; done
  local deadline=$((SECONDS + GRACE))
  while ((SECONDS < deadline)); do
    local alive=0
    for pid in "${PIDS[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    ((alive)) || return
    sleep 0.2
  done
  for pid in "${PIDS[@]}"; do kill -KILL -- "-$pid" 2>/dev/null; done
}
RUNNING=("${PIDS[@]}")
FORWARDED=""
forward() {
  if [[ -n "$FORWARDED" ]]; then stop_all; exit 130; fi
  FORWARDED=$1
  echo "[local.sh] SIG$1: forwarded to every process; waiting for them to stop" >&2
  # to the command alone, not its process group: the output-prefixing seds must outlive it
  for pid in "${RUNNING[@]}"; do kill "-$1" "$pid" 2>/dev/null; done
}
trap 'forward TERM' TERM
trap 'forward INT' INT
set +m  # job-control messages ("Terminated ...") would only add noise from here on

status=0
while ((${#RUNNING[@]} > 0)); do
  wait -n -p finished "${RUNNING[@]}"
  rc=$?
  [[ -n "${finished:-}" ]] || continue  # the wait was interrupted by a (forwarded) signal
  next=()
  for pid in "${RUNNING[@]}"; do [[ "$pid" != "$finished" ]] && next+=("$pid"); done
  RUNNING=("${next[@]}")
  if ((rc != 0)) && [[ -n "$FORWARDED" ]]; then
    ((status)) || status=$rc  # stopping on the signal: the others are stopping too
  elif ((rc != 0)); then
    echo "[local.sh] process ${INDEX_OF[$finished]} (pid $finished) failed with status $rc; stopping the others" >&2
    status=$rc
    stop_all
    break
  fi
done
wait 2>/dev/null
exit $status
