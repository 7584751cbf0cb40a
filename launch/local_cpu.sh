#!/usr/bin/env bash
# Local multi-process run on one CPU host: N processes on 127.0.0.1, D CPU devices each, joined by
# jax.distributed. This takes the same multi-host code path as a TPU pod or a GPU cluster.
#
#   launch/local_cpu.sh --workdir=DIR [--processes=2] [--devices=4] [--port=P] [--dry-run] \
#       [-- EXPERIMENT_FLAGS...]       # runs: python experiments/grpo_math.py --workdir=DIR FLAGS
#   launch/local_cpu.sh --workdir=DIR --cmd='python my_script.py'   # any shell command instead
#
# Process i runs with RLVR_DIST=1 RLVR_COORDINATOR=127.0.0.1:P RLVR_NUM_PROCESSES=N
# RLVR_PROCESS_ID=i JAX_PLATFORMS=cpu and --xla_force_host_platform_device_count=D appended to
# XLA_FLAGS (the last occurrence wins). P defaults to a free port. Output goes to
# DIR/logs/process_<i>.log. The launcher waits for all processes. If one fails, it stops the others
# and exits with that process's status. --dry-run prints the commands and starts nothing.
# Env: PYTHON (default python3). Uses no bash 4 features (mapfile, wait -n), for macOS's bash 3.2.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"

usage() {
  sed -n -e 1d -e '/^#SBATCH/d' -e '/^#/!q' -e 's/^# \{0,1\}//p' "${BASH_SOURCE[0]}"
}

die() {
  echo "local_cpu.sh: error: $*" >&2
  echo "run 'launch/local_cpu.sh --help' for usage" >&2
  exit 2
}

# Prints its arguments as one line of shell words. Plain words are printed as they are and
# anything else is single-quoted, so the line can be pasted into a shell (or split by shlex).
quote() {
  local out="" w sq="'" esc="'\\''"
  for w in "$@"; do
    if [[ -n "$w" && "$w" != *[!A-Za-z0-9_@%+=:,./-]* ]]; then
      out+=" $w"
    else
      out+=" '${w//$sq/$esc}'"
    fi
  done
  printf '%s\n' "${out# }"
}

positive_int() {  # flag value
  [[ "$2" =~ ^[1-9][0-9]*$ ]] || die "$1 must be a positive integer, got '$2'"
}

processes=2
devices=4
port=""
workdir=""
cmd=""
dry_run=0
exp_args=()
while (($#)); do
  case "$1" in
    --processes=* | --devices=* | --port=* | --workdir=* | --cmd=*)
      flag="${1%%=*}" value="${1#*=}" ;;
    --processes | --devices | --port | --workdir | --cmd)
      (($# >= 2)) || die "$1 needs a value"
      flag="$1" value="$2"
      shift ;;
    --dry-run) dry_run=1; shift; continue ;;
    -h | --help) usage; exit 0 ;;
    --) shift; exp_args=("$@"); break ;;
    *) die "unknown flag '${1%%=*}' (experiment flags go after '--')" ;;
  esac
  case "$flag" in
    --processes) positive_int "$flag" "$value"; processes="$value" ;;
    --devices) positive_int "$flag" "$value"; devices="$value" ;;
    --port) positive_int "$flag" "$value"; port="$value" ;;
    --workdir) workdir="$value" ;;
    --cmd) cmd="$value" ;;
  esac
  shift
done

[[ -n "$workdir" ]] || die "--workdir is required (logs go to WORKDIR/logs)"
if [[ -n "$cmd" && ${#exp_args[@]} -gt 0 ]]; then
  die "--cmd replaces the experiment, so it takes no experiment flags after '--'"
fi
if [[ -n "$cmd" ]]; then
  run_cmd=(bash -c "$cmd")
else
  run_cmd=("$PYTHON" "$ROOT/experiments/grpo_math.py" "--workdir=$workdir")
  run_cmd+=(${exp_args[@]+"${exp_args[@]}"})  # ${a[@]+...}: an empty array under set -u (bash 3.2)
fi
if [[ -z "$port" ]]; then
  # The OS picks a free port. Another program could take it before process 0 binds it; pass
  # --port if that ever happens.
  free_port_py='import socket; s = socket.socket(); s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])'
  port="$("$PYTHON" -c "$free_port_py")"
fi

logdir="$workdir/logs"
xla_flags="${XLA_FLAGS:+$XLA_FLAGS }--xla_force_host_platform_device_count=$devices"
[[ "$dry_run" == 1 ]] || mkdir -p "$logdir"

pids=()
stop_all() {
  local pid
  for pid in ${pids[@]+"${pids[@]}"}; do
    [[ -n "$pid" ]] && kill -TERM "$pid" 2>/dev/null || true
  done
}
trap stop_all EXIT
trap 'stop_all; exit 130' INT TERM

echo "local_cpu.sh: $processes processes x $devices CPU devices, coordinator 127.0.0.1:$port" >&2
for ((i = 0; i < processes; i++)); do
  proc_cmd=(env RLVR_DIST=1 "RLVR_COORDINATOR=127.0.0.1:$port" "RLVR_NUM_PROCESSES=$processes"
    "RLVR_PROCESS_ID=$i" JAX_PLATFORMS=cpu "XLA_FLAGS=$xla_flags" "${run_cmd[@]}")
  log="$logdir/process_$i.log"
  if [[ "$dry_run" == 1 ]]; then
    echo "+ $(quote "${proc_cmd[@]}") > $(quote "$log") 2>&1 &"
    continue
  fi
  "${proc_cmd[@]}" >"$log" 2>&1 &
  pids+=("$!")
done
[[ "$dry_run" == 1 ]] && exit 0
echo "local_cpu.sh: logs in $logdir (tail -f $logdir/process_0.log)" >&2

# Poll rather than `wait -n` (bash >= 4.3): the first failure must stop the others at once,
# because the rest would otherwise block in a collective until the coordinator times out.
status=0
remaining="$processes"
while ((remaining > 0)); do
  for i in "${!pids[@]}"; do
    pid="${pids[i]}"
    if [[ -z "$pid" ]] || kill -0 "$pid" 2>/dev/null; then continue; fi  # reaped, or running
    rc=0
    wait "$pid" || rc=$?
    pids[i]=""
    remaining=$((remaining - 1))
    if ((rc != 0 && status == 0)); then
      status="$rc"
      echo "local_cpu.sh: process $i failed (exit $rc); stopping the others." >&2
      echo "--- last lines of $logdir/process_$i.log ---" >&2
      tail -n 20 "$logdir/process_$i.log" >&2 || true
      stop_all
    fi
  done
  ((remaining == 0)) || sleep 0.2
done
if ((status == 0)); then
  echo "local_cpu.sh: all $processes processes finished; logs in $logdir" >&2
fi
exit "$status"
