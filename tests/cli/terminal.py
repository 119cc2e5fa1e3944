"""Running a command as a person would see it: its stdout on a pseudo-terminal."""

from __future__ import annotations

import os
import pty
import subprocess


def on_a_terminal(args: list[str], env: dict[str, str]) -> tuple[int, str, str]:
    """Run a command with its stdout on a pseudo-terminal: what a person would see."""
    leader, follower = pty.openpty()
    try:
        done = subprocess.run(
            args, env=env, stdout=follower, stderr=subprocess.PIPE, timeout=60, check=False
        )
        os.close(follower)
        chunks = []
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # the follower side is closed: all read
                break
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(leader)
    return done.returncode, b"".join(chunks).decode(), done.stderr.decode()
