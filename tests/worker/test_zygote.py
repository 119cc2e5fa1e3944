"""The runner fork server's protocol, spoken directly: what the pool relies on it for."""

from __future__ import annotations

import array
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

from taskq_core.worker.forkserver import CONTROL_SIZE

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


def test_a_runner_s_death_is_eof_on_its_reply_pipe_even_if_the_fork_server_is_stuck(
    fork_server: tuple[socket.socket, subprocess.Popen[bytes]],
) -> None:
    # The pool learns that a runner died from EOF on its reply pipe; it must not need the fork
    # server for that, which may be stopped (SIGSTOP) or stuck, and then reports no exit. So the
    # fork server must have closed its copies of the runner's pipe ends when it answers the fork.
    # Make it stick right there, every time: fill our end with answers we leave unread, so that
    # its answer to the fork waits.
    control, _ = fork_server
    refusal = json.dumps({"forked": None, "error": "got 0 file descriptors, not 2"}).encode()
    capacity = queue_capacity(refusal)
    for _ in range(capacity):
        control.send(b"fork")  # without the two pipe ends: refused, no fork, one answer each
    jobs_in, jobs_out = os.pipe()
    replies_in, replies_out = os.pipe()
    socket.send_fds(control, [b"fork"], [jobs_in, replies_out])
    os.close(jobs_in)
    os.close(replies_out)
    try:
        # EOF on its job pipe: the runner, forked while its answer waits, exits at once.
        os.close(jobs_out)
        readable, _, _ = select.select([replies_in], [], [], EOF_WITHIN)
        assert readable, f"no EOF on the reply pipe within {EOF_WITHIN}s of the runner's exit"
        assert os.read(replies_in, 1) == b""
        # And it really was stuck there: only the refusals are waiting, not the fork's answer.
        queued = array.array("i", [0])
        fcntl.ioctl(control, termios.FIONREAD, queued)  # all queued bytes, for SEQPACKET
        assert queued[0] == capacity * len(refusal)
        control.settimeout(EOF_WITHIN)
        answers = [json.loads(control.recv(CONTROL_SIZE)) for _ in range(capacity + 1)]
        assert answers[:-1] == [json.loads(refusal)] * capacity
        assert isinstance(answers[-1]["forked"], int)
    finally:
        os.close(replies_in)
