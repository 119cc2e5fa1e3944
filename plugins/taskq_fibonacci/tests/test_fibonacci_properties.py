"""Properties of FibonacciTask's input model and maths, over generated values (hypothesis)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from taskq_fibonacci import MAX_N, FibonacciInput, FibonacciOutput, FibonacciTask, fibonacci

from taskq_core import TaskContext

CTX = TaskContext(
    task_id=1, task_type="FibonacciTask", attempt=1, max_attempts=1, priority=3, worker_id="t"
)
JSON_SCALARS = st.none() | st.booleans() | st.floats(allow_nan=False) | st.text(max_size=20)
JSON = st.recursive(
    JSON_SCALARS | st.integers(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=10,
)


@settings(max_examples=200, derandomize=True)
@given(st.integers(min_value=0, max_value=MAX_N))
def test_every_n_in_range_is_accepted_and_round_trips(n: int) -> None:
    data = FibonacciInput.model_validate({"n": n})
    assert data.n == n
    assert FibonacciInput.model_validate(data.model_dump(mode="json")) == data


@settings(max_examples=200, derandomize=True)
@given(st.integers().filter(lambda n: not 0 <= n <= MAX_N))
def test_every_n_out_of_range_is_refused_naming_n(n: int) -> None:
    with pytest.raises(ValidationError) as info:
        FibonacciInput.model_validate({"n": n})
    assert [e["loc"] for e in info.value.errors()] == [("n",)]


@settings(max_examples=200, derandomize=True)
@given(JSON.filter(lambda v: not (isinstance(v, int) and not isinstance(v, bool))))
def test_anything_but_an_integer_is_refused(value: Any) -> None:
    # Booleans too: `true` is no number a caller meant, though Python counts it as 1.
    with pytest.raises(ValidationError):
        FibonacciInput.model_validate({"n": value})


@settings(max_examples=100, derandomize=True)
@given(
    st.integers(min_value=0, max_value=MAX_N),
    st.dictionaries(st.text(min_size=1, max_size=8).filter(lambda k: k != "n"), JSON, min_size=1),
)
def test_any_other_field_is_refused(n: int, extra: dict[str, Any]) -> None:
    with pytest.raises(ValidationError) as info:
        FibonacciInput.model_validate({"n": n, **extra})
    assert {e["loc"][0] for e in info.value.errors()} == set(extra)


@settings(max_examples=100, derandomize=True)
@given(st.integers(min_value=2, max_value=2_000))
def test_the_recurrence_holds_and_the_output_validates(n: int) -> None:
    assert fibonacci(n) == fibonacci(n - 1) + fibonacci(n - 2)
    out = FibonacciTask().run(FibonacciInput(n=n), CTX)
    assert FibonacciOutput.model_validate(out.model_dump(mode="json")) == out
    assert int(out.result) == fibonacci(n)
    # Above 2**53 the result travels as a string, so JSON clients never lose precision.
    assert isinstance(out.result, str) == (fibonacci(n) >= 2**53)
