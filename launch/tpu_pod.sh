#!/usr/bin/env bash
# Cloud TPU VMs (one host or a pod slice) through `gcloud compute tpus tpu-vm`; every host gets
# the same command (--worker=all).
#
#   launch/tpu_pod.sh [FLAGS] create|copy|setup|run|logs|stop|delete [-- EXPERIMENT_FLAGS (run)]
#
#   create  the TPU VM (--type, --version, --spot)
#   copy    this checkout (git's tracked and unignored files, no .venv) to ~/REMOTE_DIR everywhere
#   setup   launch/setup_host.sh tpu on all workers (idempotent: a venv with ".[tpu]")
#   run     RLVR_DIST=1 python SCRIPT EXPERIMENT_FLAGS on all workers, in the background (setsid
#           nohup, so it survives ssh disconnects), logging to REMOTE_DIR/run.log with its pid in
#           REMOTE_DIR/run.pid; it refuses to start while that pid is alive
#   logs    tail REMOTE_DIR/run.log on --worker (default all); --follow streams it (use --worker=0)
#   stop    kill the run's process group (from run.pid) on all workers; the VM keeps running
#   delete  the TPU VM (gcloud asks for confirmation)
#
# Flags (and environment defaults):
#   --name=NAME        TPU_NAME (required)          --zone=ZONE      TPU_ZONE (required)
#   --project=ID       TPU_PROJECT (default: the gcloud config's project)
#   --type=TYPE        TPU_TYPE (default v5litepod-8)
#   --version=RUNTIME  TPU_VERSION (default v2-alpha-tpuv5-lite; e.g. tpu-ubuntu2204-base for v4)
#   --spot             create a Spot VM             --remote-dir=DIR TPU_REMOTE_DIR (default rlvr)
#   --script=PATH      run: the experiment main (default experiments/grpo_math.py)
#   --env=KEY=VALUE    run: an extra environment variable (repeatable)
#   --worker=W         logs: all or a worker index  --lines=N        logs: lines (default 100)
#   --follow           logs: tail -f                --dry-run        print the gcloud commands only
# On TPU, jax.distributed.initialize() finds the coordinator and process ids by itself, so run sets
# only RLVR_DIST=1.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SUBCOMMANDS="create copy setup run logs stop delete"

usage() {
  sed -n -e 1d -e '/^#SBATCH/d' -e '/^#/!q' -e 's/^# \{0,1\}//p' "${BASH_SOURCE[0]}"
}

die() {
  echo "tpu_pod.sh: error: $*" >&2
  echo "run 'launch/tpu_pod.sh --help' for usage" >&2
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

run() {  # Prints the command, then runs it unless this is a dry run.
  echo "+ $(quote "$@")"
  [[ "$dry_run" == 1 ]] || "$@"
}

name="${TPU_NAME:-}"
zone="${TPU_ZONE:-}"
project="${TPU_PROJECT:-}"
type="${TPU_TYPE:-v5litepod-8}"
version="${TPU_VERSION:-v2-alpha-tpuv5-lite}"
remote_dir="${TPU_REMOTE_DIR:-rlvr}"
script=experiments/grpo_math.py
spot=0
worker=all
lines=100
follow=0
dry_run=0
subcommand=""
envs=()
exp_args=()
while (($#)); do
  case "$1" in
    --spot) spot=1; shift; continue ;;
    --follow) follow=1; shift; continue ;;
    --dry-run) dry_run=1; shift; continue ;;
    -h | --help) usage; exit 0 ;;
    --) shift; exp_args=("$@"); break ;;
    --*=*) flag="${1%%=*}" value="${1#*=}" ;;
    --*)
      (($# >= 2)) || die "unknown flag '$1', or it needs a value"
      flag="$1" value="$2"
      shift ;;
    *)
      [[ -z "$subcommand" ]] || die "one subcommand at a time (got '$subcommand' and '$1')"
      [[ " $SUBCOMMANDS " == *" $1 "* ]] || die "unknown subcommand '$1' (one of: $SUBCOMMANDS)"
      subcommand="$1"; shift; continue ;;
  esac
  case "$flag" in
    --name) name="$value" ;;
    --zone) zone="$value" ;;
    --project) project="$value" ;;
    --type) type="$value" ;;
    --version) version="$value" ;;
    --remote-dir) remote_dir="$value" ;;
    --script) script="$value" ;;
    --env)
      [[ "$value" =~ ^[A-Za-z_][A-Za-z0-9_]*= ]] || die "--env takes KEY=VALUE, got '$value'"
      envs+=("$value") ;;
    --worker)
      [[ "$value" =~ ^(all|[0-9]+)$ ]] || die "--worker takes all or an index, got '$value'"
      worker="$value" ;;
    --lines)
      [[ "$value" =~ ^[1-9][0-9]*$ ]] || die "--lines takes a positive integer, got '$value'"
      lines="$value" ;;
    *) die "unknown flag '$flag'" ;;
  esac
  shift
done

[[ -n "$subcommand" ]] || die "no subcommand (one of: $SUBCOMMANDS)"
[[ -n "$name" ]] || die "--name (or TPU_NAME) is required"
[[ -n "$zone" ]] || die "--zone (or TPU_ZONE) is required"
if [[ ${#exp_args[@]} -gt 0 && "$subcommand" != run ]]; then
  die "flags after '--' are for the experiment, which only 'run' takes"
fi
if [[ "$subcommand" == run && " ${exp_args[*]-} " != *" --workdir"* ]]; then
  die "run needs the experiment's --workdir=DIR after '--'"
fi
if [[ "$dry_run" != 1 ]] && ! command -v gcloud >/dev/null; then
  die "gcloud not found (https://cloud.google.com/sdk/docs/install); --dry-run works without it"
fi

tpu_vm=(gcloud compute tpus tpu-vm)
where=("--zone=$zone")
[[ -z "$project" ]] || where+=("--project=$project")
qdir="$(quote "$remote_dir")"  # paths on the workers are relative to ~ unless absolute

ssh_all() {  # worker command...
  run "${tpu_vm[@]}" ssh "$name" "${where[@]}" "--worker=$1" --command "$2"
}

case "$subcommand" in
  create)
    flags=("--accelerator-type=$type" "--version=$version")
    [[ "$spot" == 0 ]] || flags+=(--spot)
    run "${tpu_vm[@]}" create "$name" "${where[@]}" "${flags[@]}"
    ;;

  copy)
    # A tarball of the files git would commit (tracked or untracked, not ignored; never .venv),
    # one scp to every worker, then unpacked in place: an existing venv on the workers survives.
    archive_dir="$(mktemp -d)"
    trap 'rm -rf "$archive_dir"' EXIT
    archive="$archive_dir/rlvr_src.tgz"
    echo "+ tar -czf $(quote "$archive") -C $(quote "$ROOT") <git ls-files --cached --others" \
      "--exclude-standard, minus .venv/ and deleted files>"
    if [[ "$dry_run" != 1 ]]; then
      list="$archive_dir/files"
      if git -C "$ROOT" rev-parse --git-dir >/dev/null 2>&1; then
        git -C "$ROOT" ls-files -z --cached --others --exclude-standard \
          | while IFS= read -r -d '' f; do
            [[ "$f" == .venv/* || ! -e "$ROOT/$f" ]] || printf '%s\0' "$f"
          done >"$list"
        COPYFILE_DISABLE=1 tar -czf "$archive" -C "$ROOT" --null -T "$list"  # no macOS ._ files
      else
        tar -czf "$archive" -C "$ROOT" --exclude=./.venv --exclude=./.git .
      fi
    fi
    run "${tpu_vm[@]}" scp "$archive" "$name:rlvr_src.tgz" "${where[@]}" --worker=all
    ssh_all all "mkdir -p $qdir && tar -xzf rlvr_src.tgz -C $qdir && rm -f rlvr_src.tgz"
    ;;

  setup)
    ssh_all all "bash $qdir/launch/setup_host.sh tpu"
    ;;

  run)
    exp="$(quote RLVR_DIST=1 ${envs[@]+"${envs[@]}"} setsid nohup .venv/bin/python "$script" \
      ${exp_args[@]+"${exp_args[@]}"})"
    # setsid: the run leads its own process group, so `stop` also ends its worker subprocesses.
    ssh_all all "cd $qdir && if [ -f run.pid ] && kill -0 \"\$(cat run.pid)\" 2>/dev/null; then\
 echo \"\$(hostname): already running, pid \$(cat run.pid)\" >&2; exit 1; fi;\
 $exp > run.log 2>&1 < /dev/null & echo \$! > run.pid; echo \"\$(hostname): started pid \$!\""
    ;;

  logs)
    tail_flags="-n $lines"
    [[ "$follow" == 0 ]] || tail_flags+=" -f"
    ssh_all "$worker" "echo \"== \$(hostname) ==\"; tail $tail_flags $qdir/run.log"
    ;;

  stop)
    ssh_all all "cd $qdir && if [ -f run.pid ]; then pid=\$(cat run.pid);\
 kill -TERM -- -\"\$pid\" 2>/dev/null || kill -TERM \"\$pid\" 2>/dev/null; rm -f run.pid;\
 echo \"\$(hostname): stopped \$pid\"; else echo \"\$(hostname): no run.pid\"; fi"
    ;;

  delete)
    run "${tpu_vm[@]}" delete "$name" "${where[@]}"
    ;;
esac
