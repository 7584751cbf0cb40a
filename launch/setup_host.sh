#!/usr/bin/env bash
# Idempotent per-host setup: a venv with rlvr_jax installed editable, plus an accelerator extra.
#
#   launch/setup_host.sh [tpu|gpu|cpu] [--venv=DIR] [--python=PY] [--force] [--no-check] [--dry-run]
#
# tpu installs ".[tpu]" (jax[tpu]), gpu installs ".[gpu]" (jax[cuda12]) and cpu installs "." (the
# default is tpu). The venv defaults to <repo>/.venv and is created if absent. The pip install is
# skipped when the stamp file <venv>/.rlvr_setup_stamp records the same extra, the same setup.py
# (sha256) and the same Python. The install is editable, so code changes need no reinstall and only
# a setup.py change does. A stamp keyed on the git commit would reinstall on every commit, and a
# tarball copy (tpu_pod.sh copy) has no .git. Last, the script imports jax in the venv, prints the
# devices and fails if the backend is not the expected one (--no-check skips this). On a multi-host
# TPU, run it on all workers at once (tpu_pod.sh setup does), since each host's TPU runtime starts
# together with the others. --force reinstalls. --dry-run prints the commands and changes nothing.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

usage() {
  sed -n -e 1d -e '/^#SBATCH/d' -e '/^#/!q' -e 's/^# \{0,1\}//p' "${BASH_SOURCE[0]}"
}

die() {
  echo "setup_host.sh: error: $*" >&2
  echo "run 'launch/setup_host.sh --help' for usage" >&2
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

extra=tpu
venv="$ROOT/.venv"
python=python3
force=0
check=1
dry_run=0
while (($#)); do
  case "$1" in
    tpu | gpu | cpu) extra="$1" ;;
    --venv=*) venv="${1#*=}" ;;
    --python=*) python="${1#*=}" ;;
    --venv | --python)
      (($# >= 2)) || die "$1 needs a value"
      if [[ "$1" == --venv ]]; then venv="$2"; else python="$2"; fi
      shift ;;
    --force) force=1 ;;
    --no-check) check=0 ;;
    --dry-run) dry_run=1 ;;
    -h | --help) usage; exit 0 ;;
    *) die "unknown argument '$1' (expected tpu, gpu or cpu, or a flag)" ;;
  esac
  shift
done
case "$extra" in
  tpu) spec="${ROOT}[tpu]" backend=tpu ;;
  gpu) spec="${ROOT}[gpu]" backend=gpu ;;  # jax calls its CUDA backend "gpu"
  cpu) spec="$ROOT" backend=cpu ;;
esac

# --- Venv ---
vpy="$venv/bin/python"
if [[ -x "$vpy" ]]; then
  echo "setup_host.sh: venv $venv exists"
else
  command -v "$python" >/dev/null || die "--python: '$python' not found"
  # Debian and Ubuntu (TPU VM images included) ship Python without venv/ensurepip.
  if ! "$python" -c 'import ensurepip, venv' 2>/dev/null; then
    if command -v apt-get >/dev/null && sudo -n true 2>/dev/null; then
      run sudo apt-get update -q
      run sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-venv
    elif [[ "$dry_run" != 1 ]]; then
      die "'$python' cannot create a venv; install python3-venv (or pass --python=PY)"
    fi
  fi
  run "$python" -m venv "$venv"
fi

# --- Install ---
if [[ -x "$vpy" ]]; then stamp_py="$vpy"; else stamp_py="$python"; fi
sha_py='import hashlib, sys; print(hashlib.sha256(open(sys.argv[1], "rb").read()).hexdigest())'
setup_sha="$("$stamp_py" -c "$sha_py" "$ROOT/setup.py")"
py_version="$("$stamp_py" -c 'import platform; print(platform.python_version())')"
stamp_file="$venv/.rlvr_setup_stamp"
stamp="extra=$extra setup.py=$setup_sha python=$py_version"
if [[ "$force" == 0 && -f "$stamp_file" && "$(cat "$stamp_file")" == "$stamp" ]]; then
  echo "setup_host.sh: up to date ($stamp); skipping pip install (--force reinstalls)"
else
  run "$vpy" -m pip install -q --upgrade pip
  run "$vpy" -m pip install -q -e "$spec"
  echo "+ echo $(quote "$stamp") > $(quote "$stamp_file")"
  [[ "$dry_run" == 1 ]] || printf '%s\n' "$stamp" >"$stamp_file"
fi

# --- Check ---
if [[ "$check" == 1 ]]; then
  check_py='import sys, jax; b = jax.default_backend(); print(b, jax.local_devices()); '
  check_py+='sys.exit(None if b == sys.argv[1] else f"expected the {sys.argv[1]} backend, got {b}")'
  run "$vpy" -c "$check_py" "$backend"
fi
echo "setup_host.sh: done (activate with: source $(quote "$venv/bin/activate"))"
