"""FibonacciTask on its own: the maths, the bounds, and its registration."""

from __future__ import annotations

from importlib.metadata import entry_points

import pytest
from pydantic import ValidationError
from taskq_fibonacci import MAX_N, FibonacciInput, FibonacciTask, fibonacci, register_task_types

from taskq_core import TaskContext

CTX = TaskContext(
    task_id=1, task_type="FibonacciTask", attempt=1, max_attempts=1, priority=3, worker_id="t"
)


@pytest.mark.parametrize(("n", "expected"), [(0, 0), (1, 1), (2, 1), (10, 55), (20, 6765)])
def test_small_values(n: int, expected: int) -> None:
    assert fibonacci(n) == expected
    assert FibonacciTask().run(FibonacciInput(n=n), CTX).result == expected


def test_identity_holds_at_the_bound() -> None:
    # fib(2k) = fib(k) * (2 fib(k+1) - fib(k)) checks a large value without a stored constant.
    k = MAX_N // 2
    assert fibonacci(2 * k) == fibonacci(k) * (2 * fibonacci(k + 1) - fibonacci(k))


def test_large_results_are_decimal_strings() -> None:
    out = FibonacciTask().run(FibonacciInput(n=100), CTX)
    assert out.result == "354224848179261915075"


@pytest.mark.parametrize("bad", [{"n": -1}, {"n": MAX_N + 1}, {"n": "ten"}, {"n": 1, "m": 2}, {}])
def test_input_is_bounded_and_strict(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        FibonacciInput.model_validate(bad)


def test_registers_through_hook_and_entry_point() -> None:
    seen: list[type] = []
    register_task_types(seen.append)
    assert seen == [FibonacciTask]
    names = {ep.name: ep.value for ep in entry_points(group="taskq.tasks")}
    assert names.get("fibonacci") == "taskq_fibonacci"
