"""The README, run as written: every command block, in order, in one shell, on a fresh local API.

A newcomer copies the blocks into a terminal; this test does the same with bash (job control on,
as in a terminal, so `kill %2` stops a whole job), from a PATH without the project's `.venv/bin`
and without `KUBECONFIG`, so the README itself must say how to get both. A block the test cannot
run carries `<!-- not run: why -->` just above it; a transcript (```console) may only show
commands that a run block ran. The first block is the README's promise: `make demo` is run here,
`make test` is what `.ci/run` calls.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.harness import ROOT

README = ROOT / "README.md"
FENCE = re.compile(
    r"(?:<!--\s*not run:(?P<why>[^>]*)-->\s*\n)?^```(?P<lang>\w*)\n(?P<body>.*?)^```",
    re.S | re.M,
)
MARK = "::readme block::"
# Who a command runs as is not what it does: a transcript shows the command as its user types it.
IDENTITY_FLAGS = ("--as", "--as-group")

pytestmark = pytest.mark.localonly


@dataclass(frozen=True)
class Block:
    number: int
    lang: str
    body: str
    not_run: str | None


def blocks() -> list[Block]:
    found = []
    for number, match in enumerate(FENCE.finditer(README.read_text()), start=1):
        why = match["why"]
        found.append(Block(number, match["lang"], match["body"], why.strip() if why else None))
    return found


def commands(script: str) -> list[str]:
    """Each command of a shell block, continuation lines joined, comments dropped."""
    joined = script.replace("\\\n", " ")
    return [line for line in joined.splitlines() if shlex.split(line, comments=True)]


def normalised(command: str) -> tuple[str, ...]:
    words = shlex.split(command.removeprefix("$ "), comments=True)
    kept: list[str] = []
    skip = False
    for word in words:
        if skip:
            skip = False
            continue
        if word in IDENTITY_FLAGS:
            skip = True
            continue
        if word.split("=", 1)[0] in IDENTITY_FLAGS or word == "&":
            continue
        kept.append(word)
    return tuple(kept)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def newcomer_env(tmp_path: Path) -> dict[str, str]:
    """A shell as a newcomer has it: no KUBECONFIG, no .venv/bin on PATH; private ports."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KUBECONFIG", "LAPSE_"))}
    venv_bin = str(ROOT / ".venv" / "bin")
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if p != venv_bin)
    env.update(
        KUBEAPI_PORT=str(free_port()),
        KUBEAPI_DIR=str(tmp_path / "kubeapi"),
        KUBECACHEDIR=str(tmp_path / "kubectl-cache"),
        LAPSE_WEBHOOK_PORT=str(free_port()),
        LAPSE_METRICS_PORT=str(free_port()),
        NO_COLOR="1",
    )
    return env


class Shell:
    """bash with job control in its own session, as a newcomer's terminal. Output goes to a
    file, since background jobs keep a pipe open; everything in the session is killed
    afterwards, whatever the README's own clean-up did (each job has its own process group)."""

    def __init__(self, env: dict[str, str], workdir: Path) -> None:
        self.env = env
        self.workdir = workdir
        self.sessions: list[int] = []

    def run(self, script: str, timeout: float) -> subprocess.CompletedProcess[str]:
        log = self.workdir / f"shell-{len(self.sessions)}.log"
        with log.open("w") as out:
            process = subprocess.Popen(
                ["bash", "-c", script],
                cwd=ROOT,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                text=True,
                start_new_session=True,
            )
        self.sessions.append(process.pid)
        try:
            code = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.close()
            code = process.wait()
        return subprocess.CompletedProcess(process.args, code, log.read_text(), "")

    def close(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            left = [pid for pid in _pids() if _session_of(pid) in self.sessions]
            for pid in left:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            if left and sig == signal.SIGTERM:
                time.sleep(2)


def _pids() -> list[int]:
    return [int(entry) for entry in os.listdir("/proc") if entry.isdigit()]


def _session_of(pid: int) -> int | None:
    try:
        return os.getsid(pid)
    except (ProcessLookupError, PermissionError):
        return None


@pytest.fixture
def shell(tmp_path: Path) -> Iterator[Shell]:
    terminal = Shell(newcomer_env(tmp_path), tmp_path)
    try:
        yield terminal
    finally:
        terminal.close()


def test_every_block_is_run_or_says_why_not() -> None:
    found = blocks()
    assert found, "no code blocks found in README.md"
    for block in found:
        if block.not_run is not None:
            assert block.not_run, f"block {block.number}: `not run:` needs a reason"
            assert block.lang == "sh", f"block {block.number}: only shell blocks are run"
    first = found[0]
    assert first.lang == "sh" and first.not_run is None
    assert [normalised(c) for c in commands(first.body)] == [("make", "demo"), ("make", "test")]
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^make test$", ci, re.M), ".ci/run must call the README's test command"


def test_transcripts_show_only_commands_the_readme_runs() -> None:
    ran = {
        normalised(command)
        for block in blocks()
        if block.lang == "sh" and block.not_run is None
        for command in commands(block.body)
    }
    for block in blocks():
        if block.lang != "console":
            continue
        for line in block.body.splitlines():
            if line.startswith("$ "):
                assert normalised(line) in ran, f"block {block.number}: {line!r} is never run"


def test_readme_blocks_run_in_order_on_a_fresh_local_api(shell: Shell) -> None:
    runnable = [b for b in blocks()[1:] if b.lang == "sh" and b.not_run is None]
    script = ["set -euo pipefail", "set -m"]
    for block in runnable:
        script.append(f"echo '{MARK} {block.number}'")
        script.append(block.body)
    done = shell.run("\n".join(script), timeout=600)
    output = done.stdout
    last = re.findall(rf"^{re.escape(MARK)} (\d+)$", output, re.M)
    where = f"(failed in README block {last[-1]})" if last else ""
    assert done.returncode == 0, f"{where}\n{output[-6000:]}"
    # What each part of the path promises, as a newcomer reads it.
    assert "export KUBECONFIG=" in output  # `make kubeapi` says how to use it
    assert "Lapse is ready." in output
    assert re.search(r"AccessRequest payments/edit-\w+ is active\.", output)
    assert "It needs 1 approval from group payments-leads; it has none" in output
    assert "accessrequest/restart-worker approved" in output
    assert "BreakGlass inc-4711 is active." in output
    assert "breakglass/inc-4711 revoked; its access is gone" in output
    assert "breakglass/inc-4711 reviewed: Justified" in output
    assert "Traceback" not in output


def test_make_demo_runs_on_the_local_api(shell: Shell) -> None:
    done = shell.run("make demo", timeout=300)
    assert done.returncode == 0, done.stdout[-6000:]
    assert "$ kubectl lapse list -n payments --as alice" in done.stdout
    assert "AccessRequest payments/fix-payment-retries is active." in done.stdout
    assert "done: everything started by the demo has stopped." in done.stdout
