"""Sandbox tests: 60 hostile programs (CPU, processes, signals at the parent, memory, disk,
files outside the sandbox, network, secrets, output, verifier hacks). Each must give no false
pass, leave no process behind and no file changed outside the sandbox, keep the parent alive and
end within timeout + 1 s. The pool, probe, weak mode and unprivileged path are in
tests/rewards_sandbox_pool_test.py."""

import os
import secrets
import socket
import sys
import time

import psutil
import pytest

from rlvr_jax.rewards import code as code_lib
from rlvr_jax.rewards import sandbox
from tests import fixtures
from tests import sandbox_helpers as helpers

# Linux namespaces are probed, not assumed (see tests/fixtures.sandbox_mark).
pytestmark = fixtures.sandbox_mark()

TIMEOUT_S = 1.5
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Every program starts with this; `escaped(...)` marks an attack that worked.
PRELUDE = """\
import os, signal, socket, subprocess, sys, time
def escaped(what):
    print("ESCAPED", what, flush=True)
def blocked(what, fn):
    try:
        fn()
    except BaseException as e:
        print("blocked", what, type(e).__name__, flush=True)
    else:
        escaped(what)
"""

SPIN = "while True:\n    pass\n"
RUN_PROGRAMS = {
    # --- CPU and time ---
    "infinite_loop": SPIN,
    "sleep_forever": "time.sleep(10**6)",
    "spinning_threads": "import threading\ndef spin():\n    while True:\n        pass\n"
    "for _ in range(8):\n    threading.Thread(target=spin).start()\n" + SPIN,
    "ignores_signals": "for s in (signal.SIGTERM, signal.SIGXCPU, signal.SIGHUP, signal.SIGINT):\n"
    "    signal.signal(s, signal.SIG_IGN)\n" + SPIN,
    "blocks_on_pipe": "r, w = os.pipe()\nos.read(r, 1)",
    "stops_itself": "os.kill(os.getpid(), signal.SIGSTOP)",
    # --- processes ---
    "fork_bomb": "while True:\n    try:\n        os.fork()\n    except OSError:\n        pass",
    "shell_fork_bomb": "subprocess.run(['bash', '-c', ':(){ :|:& };:'])\n" + SPIN,
    "thread_bomb": "import threading\nwhile True:\n    try:\n"
    "        threading.Thread(target=time.sleep, args=(100,)).start()\n"
    "    except RuntimeError:\n        break\n" + SPIN,
    "setsid_double_fork": "if os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n"
    "        time.sleep(100)\n        escaped('daemon lived')\n    os._exit(0)\nprint('bye')",
    "daemon_holds_stdout": "if os.fork() == 0:\n    os.setsid()\n    time.sleep(100)\nprint('bye')",
    "detached_popen": "subprocess.Popen(['sleep', '1000'], start_new_session=True)\nprint('bye')",
    "nohup_shell": "os.system('nohup sleep 1000 > /dev/null 2>&1 &')\nprint('bye')",
    "kill_parent": "blocked('kill ppid', lambda: os.kill(os.getppid(), 9))\n"
    "blocked('kill trainer', lambda: os.kill(@PARENT_PID@, 9))\n"
    "blocked('kill pid 1', lambda: os.kill(1, 9))",
    "kill_everything": "subprocess.run(['sh', '-c', 'kill -9 -1'])\nos.kill(-1, 9)",
    "signal_init": "for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1):\n"
    "    blocked(f'signal init {s}', lambda: os.kill(1, s))\ntime.sleep(0.2)\nprint('alive')",
    "ptrace_init": "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
    "if libc.ptrace(16, 1, 0, 0) == 0:\n    escaped('ptrace attach')\n"
    "for f in ('mem', 'environ', 'fd', 'root/etc/passwd'):\n"
    "    blocked(f, lambda: os.listdir('/proc/1/fd') if f == 'fd' else "
    "open('/proc/1/' + f).read(1))",
    # --- memory ---
    "memory_bomb": "x = bytearray(10**10)",
    "memory_growth": "chunks = []\nwhile True:\n    chunks.append(b'x' * 10**7)",
    "memory_in_children": "for _ in range(16):\n    if os.fork() == 0:\n"
    "        try:\n            x = b'x' * (10**9)\n            escaped('1 GB in a child')\n"
    "        finally:\n            os._exit(0)\nwhile True:\n    try:\n        os.wait()\n"
    "    except ChildProcessError:\n        break",
    "mmap_bomb": "import mmap\nm = mmap.mmap(-1, 8 << 30)",
    "shm_bomb": "i = 0\nwhile True:\n    open(f'/dev/shm/x{i}', 'wb').write(b'x' * (1 << 19))\n"
    "    i += 1",
    "nested_userns_tmpfs": "r = subprocess.run(['unshare', '-rm', 'sh', '-c', "
    "'mount -t tmpfs none /sandbox && echo ESCAPED mounted'], capture_output=True, text=True)\n"
    "print(r.stdout, r.stderr)",
    # --- disk and files ---
    "huge_file": "with open('big', 'wb') as f:\n    while True:\n        f.write(b'x' * 65536)",
    "many_files": "i = 0\nwhile True:\n    open(f'f{i}', 'wb').write(b'x' * ((1 << 20) - 1))\n"
    "    i += 1",
    "open_file_bomb": "fs = []\nwhile True:\n    fs.append(open('/dev/null'))",
    "sentinel_write_delete": "blocked('write', lambda: open('@SENTINEL@', 'w').write('owned'))\n"
    "blocked('delete', lambda: os.remove('@SENTINEL@'))\n"
    "import shutil\nblocked('rmtree', lambda: shutil.rmtree(os.path.dirname('@SENTINEL@')))",
    "visible_sentinel": "p = '@VISIBLE@'\n"
    "blocked('write', lambda: open(p, 'w').write('owned'))\n"
    "blocked('append', lambda: open(p, 'a').write('owned'))\n"
    "blocked('delete', lambda: os.remove(p))\nblocked('chmod', lambda: os.chmod(p, 0o777))\n"
    "blocked('rename', lambda: os.rename(p, p + '.x'))",
    "write_tmp_home_repo": "for d in ('/tmp', os.path.expanduser('~'), '/root', '@REPO@', "
    "'@PREFIX@', '/usr/local', '/', '/etc', '/dev'):\n"
    "    try:\n        open(os.path.join(d, 'rlvr-escape-@TOKEN@'), 'w').write('x')\n"
    "    except OSError:\n        pass",
    "plant_sitecustomize": "import sysconfig\nfor d in (sysconfig.get_paths()['stdlib'], "
    "sysconfig.get_paths()['purelib']):\n"
    "    blocked(d, lambda: open(d + '/sitecustomize.py', 'w').write('print(1)'))",
    "remount_rw": "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
    "for t in (b'/', b'/usr', b'/proc', b'/sandbox'):\n"
    "    if libc.mount(None, t, None, 32 | 4096, None) == 0:\n        escaped(t)\n"
    "    if libc.umount2(t, 2) == 0:\n        escaped(b'umount ' + t)\n"
    "print(subprocess.run(['mount', '-o', 'remount,rw', '/usr'], capture_output=True))",
    "chroot_and_devices": "blocked('chroot', lambda: os.chroot('/sandbox'))\n"
    "blocked('mknod', lambda: os.mknod('disk', 0o600 | 0o60000, os.makedev(8, 0)))\n"
    "for d in ('/dev/sda', '/dev/vda', '/dev/mem', '/dev/kmsg'):\n"
    "    blocked(d, lambda: open(d, 'rb'))",
    "proc_root_escape": "for p in ('/proc/1/root/work', '/proc/1/cwd/work', '@SENTINEL@'):\n"
    "    blocked(p, lambda: os.listdir(p))\n"
    "blocked('repo', lambda: open('/proc/1/root/@REPO@/README.md'))",
    "read_host_files": "for p in ('/etc/shadow', '/root/.bash_history', '@REPO@/README.md', "
    "'/work', '@ANSWER_KEY@'):\n"
    "    blocked(p, lambda: os.listdir(p) if os.path.isdir(p) else open(p).read(1))",
    "find_answer_key": "end = time.time() + 1.0\nfor root, dirs, files in os.walk('/'):\n"
    "    if root.startswith(('/proc', '/dev')) or time.time() > end:\n        dirs[:] = []\n"
    "        continue\n    for f in files:\n        try:\n"
    "            data = open(os.path.join(root, f), 'rb').read(1 << 16)\n"
    "        except OSError:\n            continue\n        if b'RLVR' b'_KEY:' in data:\n"
    "            print(data.split(b'RLVR' b'_KEY:')[1][:40].decode())",
    # --- network ---
    "public_tcp": "for a in (('1.1.1.1', 53), ('8.8.8.8', 443), ('2606:4700:4700::1111', 53)):\n"
    "    s = socket.socket(socket.AF_INET6 if ':' in a[0] else socket.AF_INET)\n"
    "    s.settimeout(1)\n    blocked(a, lambda: s.connect(a))",
    "udp_and_dns": "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
    "blocked('udp', lambda: s.sendto(b'x', ('8.8.8.8', 53)))\n"
    "blocked('dns', lambda: socket.getaddrinfo('example.com', 80))",
    "host_loopback": "for a in (('127.0.0.1', @PORT@), ('localhost', @PORT@)):\n"
    "    s = socket.socket()\n    s.settimeout(1)\n    blocked(a, lambda: s.connect(a))",
    "own_loopback": "s = socket.socket()\ns.bind(('127.0.0.1', 0))\ns.listen()\n"
    "c = socket.socket()\nc.settimeout(1)\nblocked('loopback', lambda: c.connect(s.getsockname()))",
    "host_unix_sockets": "for a in ('\\0rlvr-test-@TOKEN@', '@UNIX_PATH@'):\n"
    "    s = socket.socket(socket.AF_UNIX)\n    blocked(a, lambda: s.connect(a))",
    "raw_and_netlink": "blocked('raw', lambda: socket.socket(socket.AF_INET, socket.SOCK_RAW, 1))\n"
    "try:\n        print(subprocess.run(['ip', 'link', 'set', 'lo', 'up']).returncode)\n"
    "except OSError as e:\n    print(e)",
    # --- secrets ---
    "read_env": "print(dict(os.environ))\nprint(open('/proc/self/environ').read())",
    "read_parent_environ": "for p in ('@PARENT_PID@', str(os.getppid()), '1'):\n"
    "    try:\n        print(open(f'/proc/{p}/environ').read())\n    except OSError as e:\n"
    "        print('blocked', p, e)",
    "scan_proc_environ": "for p in os.listdir('/proc'):\n    try:\n"
    "        print(open(f'/proc/{p}/environ').read(), open(f'/proc/{p}/cmdline').read())\n"
    "    except OSError:\n        pass",
    # --- output ---
    "huge_stdout": "while True:\n    sys.stdout.write('x' * 65536)",
    "huge_stderr": "while True:\n    os.write(2, b'e' * 65536)",
    "huge_line_no_newline": "os.write(1, b'y' * (10 << 20))",
    "closed_stdout": "os.close(1)\nos.close(2)\n" + SPIN,
    "binary_garbage": "os.write(1, bytes(range(256)) * 100)",
}

CALL_PROGRAMS = {  # (task, program): run through the verifier, which must not pass them
    "always_equal_object": ("is_even", "class A:\n    def __eq__(self, o):\n        return True\n"
                            "def is_even(n):\n    return A()"),
    "always_equal_int": ("fib", "class B(int):\n    def __eq__(self, o):\n        return True\n"
                         "    __hash__ = int.__hash__\ndef fib(n):\n    return B(0)"),
    "always_equal_str_of_value": ("fib", "class S(str):\n    def __eq__(self, o):\n"
                                  "        return True\ndef fib(n):\n    return S('55')"),
    "exit_at_import": ("fib", "import sys\nsys.exit(0)"),
    "os_exit_in_call": ("fib", "import os\ndef fib(n):\n    os._exit(0)"),
    "system_exit_in_call": ("fib", "def fib(n):\n    raise SystemExit(0)"),
    "kill_self_in_call": ("fib", "import os\ndef fib(n):\n    os.kill(os.getpid(), 9)"),
    "patched_print_stdout": ("is_even", "import builtins, sys, io\n"
                             "builtins.print = lambda *a, **k: None\nsys.stdout = io.StringIO()\n"
                             "def is_even(n):\n    return True"),
    "patched_json": ("is_even", "import json\njson.dumps = lambda *a, **k: '{\"value\": true}'\n"
                     "json.loads = lambda *a, **k: True\ndef is_even(n):\n    return None"),
    "patched_harness_encoder": ("fib", "import __main__\n__main__._encode = lambda v, d=0: 55\n"
                                "def fib(n):\n    return 0"),
    "forged_lines_no_nonce": ("is_even", "import os\nfor fd in range(1, 12):\n"
                              "    for i in range(4):\n        try:\n"
                              "            os.write(fd, f'{os.urandom(16).hex()} {i} "
                              "{{\"value\": true}}\\n'.encode())\n"
                              "        except OSError:\n            pass\n"
                              "def is_even(n):\n    return None"),
    "stolen_nonce_hedge": ("is_even", "import os, sys\n"
                           "def is_even(n):\n    f = sys._getframe(1)\n"
                           "    nonce, out = f.f_locals['nonce'], f.f_locals['out']\n"
                           "    for i in range(4):\n        for v in ('true', 'false'):\n"
                           "            line = f'{nonce} {i} {{\"value\": {v}}}\\n'\n"
                           "            os.write(out, line.encode())\n"
                           "    return True"),
    "stolen_nonce_then_exit": ("is_even", "import os, sys\n"
                               "def is_even(n):\n    f = sys._getframe(1)\n"
                               "    nonce, out = f.f_locals['nonce'], f.f_locals['out']\n"
                               "    for i in range(4):\n"
                               "        line = f'{nonce} {i} {{\"value\": true}}\\n'\n"
                               "        os.write(out, line.encode())\n"
                               "    os._exit(0)"),
    "rewritten_calls": ("is_even", "import sys\nf = sys._getframe(1)\n"
                        "for c in f.f_locals.get('calls', []):\n    c[1] = [4]\n"
                        "def is_even(n):\n    return True"),
    "planted_files": ("is_even", "import os\nfor n in ('sitecustomize.py', 'usercustomize.py', "
                      "'conftest.py', 'json.py', 'main.py', 'solution.py'):\n"
                      "    open(n, 'w').write('print(\"0 0 {}\")\\nimport os\\nos._exit(0)')\n"
                      "d = os.path.expanduser('~/.local/lib/python3.11/site-packages')\n"
                      "os.makedirs(d, exist_ok=True)\n"
                      "open(d + '/usercustomize.py', 'w').write('raise SystemExit')\n"
                      "def is_even(n):\n    return False"),
    "hostile_exception_str": ("fib", "class E(Exception):\n    def __str__(self):\n"
                              "        while True:\n            pass\n"
                              "def fib(n):\n    raise E()"),
    "huge_result": ("fib", "def fib(n):\n    return list(range(10**7))"),
    "self_referencing_result": ("fib", "def fib(n):\n    x = []\n    x.append(x)\n    return x"),
    "bigint_result": ("fib", "def fib(n):\n    return 10**5000"),
    "closes_result_fd": ("fib", "import os\nos.closerange(3, 100)\n"
                         "def fib(n):\n    return {0: 0, 1: 1, 10: 55}.get(n, 0) + 1"),
}  # fmt: skip


@pytest.fixture
def world(tmp_path, monkeypatch):
    """The host around the sandbox: an answer in the env and in a key file, sentinels, sockets."""
    token, answer = secrets.token_hex(6), f"ANSWER-{secrets.token_hex(16)}"
    monkeypatch.setenv(helpers.SECRET_ENV, answer)
    (tmp_path / "answer_key.txt").write_text(f"RLVR_KEY:{answer}\n")
    sentinel = tmp_path / "sentinel.txt"
    sentinel.write_text(secrets.token_hex(8))
    visible = f"/usr/local/rlvr-sentinel-{token}"  # inside the sandbox's read-only view
    if os.access("/usr/local", os.W_OK):
        with open(visible, "w") as f:
            f.write(secrets.token_hex(8))
    tcp = socket.create_server(("127.0.0.1", 0))
    abstract = socket.socket(socket.AF_UNIX)
    abstract.bind(f"\0rlvr-test-{token}")
    unix_path = str(tmp_path / "s.sock")
    unix = socket.socket(socket.AF_UNIX)
    unix.bind(unix_path)
    for s in (tcp, abstract, unix):
        s.listen()
        s.setblocking(False)
    home = os.path.expanduser("~")
    escapes = [os.path.join(d, f"rlvr-escape-{token}") for d in
               ("/tmp", home, REPO, sys.base_prefix, "/usr/local", "/", "/etc")]  # fmt: skip
    subs = {
        "@TOKEN@": token, "@SENTINEL@": str(sentinel), "@VISIBLE@": visible, "@REPO@": REPO,
        "@PREFIX@": sys.base_prefix, "@PORT@": str(tcp.getsockname()[1]),
        "@PARENT_PID@": str(os.getpid()), "@UNIX_PATH@": unix_path,
        "@ANSWER_KEY@": str(tmp_path / "answer_key.txt"),
    }  # fmt: skip
    files = [sentinel, tmp_path / "answer_key.txt"] + ([visible] if os.path.exists(visible) else [])
    contents = {str(f): open(f).read() for f in files}
    staging = tmp_path / "staging"
    staging.mkdir()
    state = dict(answer=answer, subs=subs, staging=str(staging), sockets=(tcp, abstract, unix))
    yield state
    try:
        for f, text in contents.items():
            assert os.path.exists(f) and open(f).read() == text, f"{f} changed"
        for path in escapes:
            assert not os.path.lexists(path), f"{path} was written from the sandbox"
        assert os.listdir(staging) == [], "a staging directory was left behind"
        for s in (tcp, abstract, unix):
            with pytest.raises(BlockingIOError):
                s.accept()  # nothing connected from the sandbox
    finally:
        for s in (tcp, abstract, unix):
            s.close()
        for path in [*escapes, visible]:
            if os.path.lexists(path) and path.startswith(("/usr/local/", "/tmp/")):
                os.remove(path)


def _source(body: str, subs: dict) -> str:
    text = PRELUDE + body
    for key, value in subs.items():
        text = text.replace(key, value)
    return text


def _common_checks(before: set, wall_s: float, output: str, answer: str):
    assert answer not in output, "the program found the expected answer"
    assert "ESCAPED" not in output, output[-2000:]
    assert wall_s <= TIMEOUT_S + 1.0, f"took {wall_s:.2f}s"
    assert psutil.pid_exists(os.getppid()), "the parent of the test process died"
    assert not helpers.wait_no_leftovers(before), helpers.leftovers(before)


@pytest.mark.parametrize("name", sorted(RUN_PROGRAMS))
def test_hostile_program_is_contained(name, world):
    cfg = sandbox.SandboxConfig(timeout_s=TIMEOUT_S, tmp_root=world["staging"])
    before = helpers.procs()
    start = time.monotonic()
    res = sandbox.run_program(_source(RUN_PROGRAMS[name], world["subs"]), "", cfg)
    wall_s = time.monotonic() - start
    assert res.isolation == "full"
    passes = res.exit_code == 0 and code_lib.normalize_output(res.stdout) == world["answer"]
    assert not passes
    _common_checks(before, wall_s, res.stdout + res.stderr, world["answer"])


@pytest.mark.parametrize("name", sorted(CALL_PROGRAMS))
def test_hostile_solution_never_passes(name, world):
    task_name, program = CALL_PROGRAMS[name]
    sandbox_cfg = sandbox.SandboxConfig(timeout_s=TIMEOUT_S, tmp_root=world["staging"])
    cfg = code_lib.CodeConfig(sandbox=sandbox_cfg, reward_mode="fraction")
    task = helpers.TASKS[f"embedded/{task_name}"]
    before = helpers.procs()
    start = time.monotonic()
    verdict = code_lib.score_code(f"```python\n{program}\n```", task, cfg)
    wall_s = time.monotonic() - start
    assert verdict.status in ("wrong", "timeout", "runtime_error"), verdict
    assert verdict.reward < 1.0 and verdict.passed < verdict.total, verdict
    _common_checks(before, wall_s, verdict.feedback, world["answer"])


def test_at_least_forty_hostile_programs():
    assert len(RUN_PROGRAMS) + len(CALL_PROGRAMS) >= 40
