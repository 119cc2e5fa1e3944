"""A test plugin declaring a periodic task through `register_schedules`."""

from taskq_core import hookimpl


@hookimpl
def register_schedules(register):  # type: ignore[no-untyped-def]
    register(
        "cron-fib",
        "* * * * * *",
        "FibonacciTask",
        {"n": 7},
        timezone="Europe/Berlin",
        priority=4,
    )
    # Refused when stored (the input does not fit the type's schema), and said so in the log.
    register("cron-bad", "* * * * *", "FibonacciTask", {"n": "seven"})
