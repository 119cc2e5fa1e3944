"""`taskq schedules ...`: create, list, pause, resume, delete, and refusals."""

from __future__ import annotations

import subprocess

from tests.conftest import Servers, taskq


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(taskq(*args), env=env, capture_output=True, text=True, check=False)


def test_schedules_from_the_command_line(clean: Servers) -> None:
    env = clean.env()
    made = cli(
        env,
        "schedules",
        "create",
        "hourly-fib",
        "0 * * * *",
        "FibonacciTask",
        '{"n": 4}',
        "--timezone",
        "Asia/Kolkata",
        "--catch-up",
        "skip",
    )
    assert made.returncode == 0, made.stderr
    header, row = made.stdout.splitlines()
    assert header.split("\t")[:5] == ["name", "cron", "timezone", "task_type", "paused"]
    fields = row.split("\t")
    assert fields[:5] == ["hourly-fib", "0 * * * *", "Asia/Kolkata", "FibonacciTask", "active"]
    # Kolkata is UTC+05:30: its hours start at half past in UTC.
    assert fields[5].endswith(":30:00+00:00")
    assert clean.sql("SELECT catch_up, input_data FROM schedules") == [("skip", {"n": 4})]

    assert cli(env, "schedules", "pause", "hourly-fib").stdout.splitlines()[1].split("\t")[4] == (
        "paused"
    )
    assert cli(env, "schedules", "resume", "hourly-fib").stdout.splitlines()[1].split("\t")[4] == (
        "active"
    )
    listed = cli(env, "schedules", "list").stdout.splitlines()
    assert [line.split("\t")[0] for line in listed[1:]] == ["hourly-fib"]
    assert cli(env, "schedules", "delete", "hourly-fib").stdout == "deleted schedule hourly-fib\n"
    assert clean.sql("SELECT count(*) FROM schedules") == [(0,)]


def test_bad_schedules_are_refused_with_the_reason(clean: Servers) -> None:
    env = clean.env()
    for args, message in (
        (["bad", "61 * * * *", "FibonacciTask", '{"n": 1}'], "invalid cron expression"),
        (["bad", "* * * * *", "FibonacciTask", '{"n": "x"}'], "input_data.n"),
        (["bad", "* * * * *", "NoSuchTask"], "known task types"),
        (["bad", "* * * * *", "FibonacciTask", "{not json"], "INPUT is not JSON"),
    ):
        result = cli(env, "schedules", "create", *args)
        assert result.returncode == 2, result.stdout
        assert message in result.stderr
    missing = cli(env, "schedules", "pause", "nope")
    assert missing.returncode == 2
    assert "schedule 'nope' not found" in missing.stderr
    assert clean.sql("SELECT count(*) FROM schedules") == [(0,)]
