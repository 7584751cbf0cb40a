"""Sandbox tests beside the hostile-program table: the leftover check itself, the isolation
probe, a program run like a plain interpreter, 200 programs through the pool without a leak, the
refusal without isolation, and the unprivileged (non-root) path with its weak mode."""

import dataclasses
import json
import os
import shutil
import subprocess
import tempfile
import time

import pytest

from rlvr_jax.rewards import code as code_lib
from rlvr_jax.rewards import code_types, sandbox
from tests import fixtures
from tests import sandbox_helpers as helpers

# Linux namespaces are probed, not assumed (see tests/fixtures.sandbox_mark).
pytestmark = fixtures.sandbox_mark()


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"), reason="needs root")
def test_leftover_check_sees_an_escaped_daemon():
    """The leftover check is not vacuous: an orphaned nobody process is reported."""
    before = helpers.procs()
    nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    subprocess.run([*nobody, "setsid", "-f", "sleep", "30"], check=True)
    try:
        end = time.monotonic() + 3
        while not (left := helpers.leftovers(before)) and time.monotonic() < end:
            time.sleep(0.05)
        assert any("sleep" in line for line in left), left
    finally:
        for line in helpers.leftovers(before):
            if "sleep" in line:
                os.kill(int(line.split()[0]), 9)


def test_probe_reports_full_isolation():
    assert sandbox.probe_isolation() == "full"


def test_runs_a_program_like_a_plain_interpreter(tmp_path):
    cfg = sandbox.SandboxConfig(timeout_s=5.0, tmp_root=str(tmp_path))
    src = (
        "import os, sys\nprint(input()[::-1], hash('seed'), os.getcwd(), sorted(os.environ))\n"
        "print(open('helper.py').read(), file=sys.stderr)\nexit(3)"
    )
    res = sandbox.run_program(src, "olleh\n", cfg, files={"helper.py": "VALUE = 1"})
    again = sandbox.run_program(src, "olleh\n", cfg, files={"helper.py": "VALUE = 1"})
    words = res.stdout.split()
    assert words[0] == "hello" and words[2] == sandbox.WORKDIR
    assert words[1] == again.stdout.split()[1], "PYTHONHASHSEED makes hashing deterministic"
    assert helpers.SECRET_ENV not in res.stdout and "'PATH'" in res.stdout
    assert res.stderr.strip() == "VALUE = 1"
    assert (res.exit_code, res.timed_out, res.truncated, res.isolation) == (3, False, False, "full")
    killed = sandbox.run_program("import os\nos.kill(os.getpid(), 9)", "", cfg)
    assert killed.exit_code == -9 and not killed.timed_out
    capped = dataclasses.replace(cfg, max_output_bytes=1000)
    big = sandbox.run_program("print('z' * 5000)", "", capped)
    assert big.truncated and big.stdout == "z" * 1000
    assert os.listdir(tmp_path) == []


def test_planted_files_neither_persist_nor_load(tmp_path):
    cfg = sandbox.SandboxConfig(timeout_s=5.0, tmp_root=str(tmp_path))
    plant = (
        "import os\nd = os.path.expanduser('~/.local/lib/python3.11/site-packages')\n"
        "os.makedirs(d)\nfor p in ('sitecustomize.py', 'usercustomize.py', 'conftest.py', "
        "'json.py', d + '/usercustomize.py', '/tmp/sitecustomize.py'):\n"
        "    open(p, 'w').write('print(\"PLANTED\")')\nprint(sorted(os.listdir('.')))"
    )
    first = sandbox.run_program(plant, "", cfg)
    assert "sitecustomize.py" in first.stdout and first.exit_code == 0
    check = "import json, os, sys\nprint(sorted(os.listdir('.')), 'sitecustomize' in sys.modules)"
    second = sandbox.run_program(check, "", cfg)
    assert second.stdout.strip() == "['main.py'] False" and "PLANTED" not in second.stdout


def test_fails_loudly_without_isolation(monkeypatch):
    monkeypatch.setitem(sandbox._PROBE_CACHE, "result", sandbox.SandboxUnavailable("forced"))
    with pytest.raises(sandbox.SandboxUnavailable, match="allow_weak"):
        sandbox.run_program("print(1)", "", sandbox.SandboxConfig())
    task = helpers.TASKS["embedded/sum_two"]
    with pytest.raises(sandbox.SandboxUnavailable):
        code_lib.score_many([task.reference_solution], [task], code_lib.CodeConfig())
    if os.geteuid() == 0:
        with pytest.raises(sandbox.SandboxUnavailable, match="root"):
            sandbox.run_program("print(1)", "", sandbox.SandboxConfig(allow_weak=True))


POOL_PROGRAMS = {  # program -> the status it must get on "print a + b"
    "a, b = map(int, input().split())\nprint(a + b)": "ok",
    "print(0)": "wrong",
    "raise ValueError('boom')": "runtime_error",
    "x = bytearray(10**10)": "runtime_error",
    "import os, time\nif os.fork() == 0:\n    os.setsid()\n    time.sleep(100)\nprint(7)": "ok",
    "import sys\nsys.stdout.write('7' * 10**6)": "wrong",
    "import os\nfor _ in range(3):\n    if os.fork() == 0:\n        print(7, flush=True)\n"
    "        os._exit(0)\n    os.wait()\nprint(7)": "wrong",
    "import os\nos.close(1)\nos._exit(0)": "wrong",
}
POOL_SLOW = "import time\ntime.sleep(100)"


def test_pool_runs_200_programs_without_a_leak(tmp_path):
    staging = tmp_path / "staging"
    staging.mkdir()
    sandbox_cfg = sandbox.SandboxConfig(timeout_s=1.0, tmp_root=str(staging))
    cfg = code_lib.CodeConfig(max_workers=4, sandbox=sandbox_cfg)
    task = code_types.CodeTask("pool/add", "Print a + b.", (code_types.StdioTest("3 4\n", "7\n"),))
    programs = [*POOL_PROGRAMS] * 24 + [POOL_SLOW] * 8
    assert len(programs) == 200
    sandbox.probe_isolation()
    fds, before = helpers.pipe_fds(), helpers.procs()
    verdicts = code_lib.score_many([f"```python\n{p}\n```" for p in programs], [task] * 200, cfg)
    for program, verdict in zip(programs, verdicts, strict=True):
        assert verdict.status == POOL_PROGRAMS.get(program, "timeout"), (program, verdict)
        assert verdict.reward == float(verdict.status == "ok")
    assert not helpers.wait_no_leftovers(before), helpers.leftovers(before)
    assert helpers.pipe_fds() <= fds  # every pipe to a program closed
    assert not helpers.pool_threads()
    assert os.listdir(staging) == []


UNPRIVILEGED_SCRIPT = """
import importlib.util, json, logging, os, sys, time
logging.basicConfig(level=logging.WARNING)
spec = importlib.util.spec_from_file_location("sbx", sys.argv[1])
s = importlib.util.module_from_spec(spec)
spec.loader.exec_module(s)
out = {"uid": os.getuid(), "probe": s.probe_isolation()}
cfg = s.SandboxConfig(timeout_s=1.5)
for name, src in [
    ("id", "import os; print(os.getpid(), os.getuid(), sum(l.startswith('Cap') and "
           "l.endswith('\\t0000000000000000') for l in open('/proc/self/status')."
           "read().splitlines()))"),
    ("write_usr", "open('/usr/rlvr-x', 'w')"),
    ("fork_bomb", "import os\\nwhile True:\\n    try:\\n        os.fork()\\n"
                  "    except OSError:\\n        pass"),
    ("nested_userns", "import subprocess\\n"
                      "print(subprocess.run(['unshare', '-r', 'true']).returncode)"),
    ("kill_init", "import os\\nfor pid in (1, -1):\\n    try:\\n        os.kill(pid, 9)\\n"
                  "    except OSError:\\n        pass\\nprint('alive')"),
    ("proc_1", "print(open('/proc/1/environ').read())"),
]:
    t = time.monotonic()
    r = s.run_program(src, "", cfg)
    out[name] = [r.stdout.strip(), r.exit_code, r.timed_out, round(time.monotonic() - t, 2)]
s._PROBE_CACHE["result"] = s.SandboxUnavailable("forced for the test")
weak = s.SandboxConfig(timeout_s=1.5, allow_weak=True)
for name, src in [("weak_loop", "while True:\\n    pass"), ("weak_memory", "x = b'x' * 10**10")]:
    t = time.monotonic()
    r = s.run_program(src, "", weak)
    out[name] = [r.isolation, r.exit_code, r.timed_out, round(time.monotonic() - t, 2)]
print(json.dumps(out))
"""


@pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("setpriv") or not os.path.exists("/usr/bin/python3"),
    reason="needs root (to switch to nobody), setpriv and a system Python readable by nobody",
)
def test_unprivileged_trainer_gets_the_same_isolation():
    """The path a non-root trainer takes: ns root maps to the trainer's own uid."""
    version = subprocess.run(
        ["/usr/bin/python3", "-c", "import sys; print(sys.version_info >= (3, 11))"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    if version.stdout.strip() != "True":
        pytest.skip("the system Python is older than 3.11")
    work = tempfile.mkdtemp()
    try:
        os.chmod(work, 0o755)
        script, module = os.path.join(work, "run.py"), os.path.join(work, "sandbox.py")
        with open(script, "w") as f:
            f.write(UNPRIVILEGED_SCRIPT)
        shutil.copy(sandbox.__file__, module)
        launcher = shutil.copy(sandbox._LAUNCHER, work)  # the parent runs it from beside itself
        for path in (script, module, launcher):
            os.chmod(path, 0o644)
        nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
        proc = subprocess.run(
            [*nobody, "/usr/bin/python3", script, module], capture_output=True, text=True,
            timeout=60, cwd=work, env={"PATH": "/usr/bin:/bin"},
        )  # fmt: skip
    finally:
        shutil.rmtree(work)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert (out["uid"], out["probe"]) == (65534, "full")
    assert out["id"][0].split() == ["2", "0", "5"]  # pid 2, ns root, five empty capability sets
    assert out["write_usr"][1] == 1
    assert out["fork_bomb"][2] and out["fork_bomb"][3] <= 2.5
    assert out["nested_userns"][0] == "1"
    assert out["kill_init"][:2] == ["alive", 0]
    assert out["proc_1"][1] == 1
    assert out["weak_loop"][:3] == ["weak", None, True] and out["weak_loop"][3] <= 2.5
    assert out["weak_memory"][:3] == ["weak", 1, False]
    assert proc.stderr.count("WEAK isolation") == 2
