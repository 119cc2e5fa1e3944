"""The runner fork server's protocol, spoken directly: what the worker relies on it for."""

from __future__ import annotations

import array
import asyncio
import fcntl
import json
import os
import select
import socket
import subprocess
import sys
import termios
from collections.abc import Iterator
from pathlib import Path

import pytest

from taskq_core.worker.forkserver import CONTROL_SIZE, ForkServer, RunnerError

EOF_WITHIN = 10.0  # seconds: generous; the runner exits at once


@pytest.fixture
def fork_server(sites: dict[str, Path]) -> Iterator[tuple[socket.socket, subprocess.Popen[bytes]]]:
    """A fork server with the testkit plugin, and our end of its control socket, once ready."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "taskq_core.worker.zygote",
            str(os.getpid()),
            str(theirs.fileno()),
        ],
        pass_fds=(theirs.fileno(),),
        stdin=subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": str(sites["taskq-testkit"])},
        start_new_session=True,
    )
    theirs.close()
    try:
        assert json.loads(ours.recv(CONTROL_SIZE)) == {"ready": True}
        yield ours, process
    finally:
        ours.close()  # at EOF it exits, and its runners with it
        process.kill()
        process.wait()


def queue_capacity(message: bytes) -> int:
    """How many `message`s a fresh socket pair like the control socket holds unread: one more
    and the sender waits (net.unix.max_dgram_qlen, or the sender's buffer)."""
    reader, writer = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    with reader, writer:
        writer.setblocking(False)
        count = 0
        while True:
            try:
                writer.send(message)
            except BlockingIOError:
                return count
            count += 1


def test_a_runner_s_death_is_eof_on_its_event_pipe_even_if_the_fork_server_is_stuck(
    fork_server: tuple[socket.socket, subprocess.Popen[bytes]],
) -> None:
    # The worker learns that a runner died from EOF on its event pipe; it must not need the fork
    # server for that, which may be stopped (SIGSTOP) or stuck, and then reports no exit. So the
    # fork server must have closed its copies of the runner's pipe ends when it answers the fork.
    # Make it stick right there, every time: fill our end with answers we leave unread, so that
    # its answer to the fork waits.
    control, _ = fork_server
    refusal = json.dumps({"forked": None, "error": "got 0 file descriptors, not 3"}).encode()
    capacity = queue_capacity(refusal)
    for _ in range(capacity):
        control.send(b"fork")  # without the runner's descriptors: refused, no fork, one answer
    config_in, config_out = os.pipe()
    events_in, events_out = os.pipe()
    memory = os.memfd_create("slot")
    socket.send_fds(control, [b"fork"], [config_in, events_out, memory])
    for fd in (config_in, events_out, memory):
        os.close(fd)
    try:
        # No config on its control pipe: the runner, forked while its answer waits, exits.
        os.close(config_out)
        readable, _, _ = select.select([events_in], [], [], EOF_WITHIN)
        assert readable, f"no EOF on the event pipe within {EOF_WITHIN}s of the runner's exit"
        assert os.read(events_in, 1) == b""
        # And it really was stuck there: only the refusals are waiting, not the fork's answer.
        queued = array.array("i", [0])
        fcntl.ioctl(control, termios.FIONREAD, queued)  # all queued bytes, for SEQPACKET
        assert queued[0] == capacity * len(refusal)
        control.settimeout(EOF_WITHIN)
        answers = [json.loads(control.recv(CONTROL_SIZE)) for _ in range(capacity + 1)]
        assert answers[:-1] == [json.loads(refusal)] * capacity
        assert isinstance(answers[-1]["forked"], int)
    finally:
        os.close(events_in)


def env_with(*sites: Path) -> dict[str, str]:
    """This process's environment with `sites` (plugin folders) on the fork server's path."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join(str(s) for s in sites)}


def start(env: dict[str, str]) -> None:
    """Spawn a fork server as a worker replacing one does; stop it once it is ready."""

    async def main() -> None:
        server = await ForkServer.start(env)
        await server.stop()

    asyncio.run(main())


def test_a_fork_server_that_cannot_start_says_why(sites: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(RunnerError, match="registered by both") as duplicate:
        start(env_with(sites["taskq-dupe"]))
    assert "DuplicateTaskTypeError" in str(duplicate.value)

    dies = tmp_path / "dies"
    dies.mkdir()
    (dies / "sitecustomize.py").write_text("import os\nos._exit(7)\n")
    with pytest.raises(RunnerError, match="exited with code 7 before it was ready"):
        start(env_with(dies))


def test_output_at_interpreter_start_does_not_break_the_handshake(
    sites: dict[str, Path], tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    chatty = tmp_path / "chatty"
    chatty.mkdir()
    (chatty / "sitecustomize.py").write_text("print('hello from sitecustomize')\n")
    start(env_with(chatty, sites["taskq-broken"]))  # a broken plugin is logged, not fatal
    assert "hello from sitecustomize" in capfd.readouterr().err
