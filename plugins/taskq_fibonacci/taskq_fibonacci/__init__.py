"""FibonacciTask: the example taskq plugin (read this to write your own)."""

from __future__ import annotations

from collections.abc import Callable

from pydantic import BaseModel, ConfigDict, Field

from taskq_core import Task, TaskContext, hookimpl

MAX_N = 10_000  # fib(10000) has 2,090 digits: a bounded, sub-millisecond request


class FibonacciInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Strict: `true`, `3.0` and `"3"` are not numbers a caller meant (hypothesis found `true`).
    n: int = Field(ge=0, le=MAX_N, strict=True, description="Which Fibonacci number to compute.")


class FibonacciOutput(BaseModel):
    # Past 2**53 a JSON number loses precision in most clients; big results travel as strings.
    result: int | str = Field(description="fib(n); a decimal string when above 2**53.")


def fibonacci(n: int) -> int:
    """fib(n) by iteration: linear time, constant memory."""
    a, b = 0, 1
    for _ in range(n):
        a, b = b, a + b
    return a


class FibonacciTask(Task):
    name = "FibonacciTask"
    description = "Compute the n-th Fibonacci number (fib(0) = 0, fib(1) = 1)."
    Input = FibonacciInput
    Output = FibonacciOutput

    def run(self, data: FibonacciInput, ctx: TaskContext) -> FibonacciOutput:
        value = fibonacci(data.n)
        return FibonacciOutput(result=value if value < 2**53 else str(value))


@hookimpl
def register_task_types(register: Callable[[type[Task]], None]) -> None:
    register(FibonacciTask)
