"""Forms generated from the shipped plugins' JSON Schemas, and posted values read back."""

from __future__ import annotations

from taskq_email.schema import EmailInput
from taskq_fibonacci import FibonacciInput

from taskq_core.api.ui import forms


def test_fibonacci_gives_one_required_integer_with_its_bounds() -> None:
    (field,) = forms.fields_of(FibonacciInput.model_json_schema())
    assert (field.name, field.kind, field.required) == ("n", "integer", True)
    assert (field.minimum, field.maximum) == (0, 10_000)
    assert field.description == "Which Fibonacci number to compute."


def test_email_lists_become_lines_and_optional_text_stays_optional() -> None:
    fields = {f.name: f for f in forms.fields_of(EmailInput.model_json_schema())}
    assert fields["to"].kind == "lines"
    assert fields["to"].required
    assert fields["html"].kind == "string"
    assert not fields["html"].required
    assert fields["cc"].default_text == ""

    data, errors = forms.parse(
        list(fields.values()),
        {"to": "a@example.com\n\n b@example.com ", "subject": "Hi", "body": "x", "html": ""},
    )
    assert errors == {}
    assert data == {"to": ["a@example.com", "b@example.com"], "subject": "Hi", "body": "x"}


def test_values_that_do_not_parse_are_left_for_validation_to_name() -> None:
    fields = forms.fields_of(FibonacciInput.model_json_schema())
    assert forms.parse(fields, {"n": "ten"}) == ({"n": "ten"}, {})
    assert forms.parse(fields, {"n": " 12 "}) == ({"n": 12}, {})
    assert forms.parse(fields, {"n": ""}) == ({}, {})  # missing: validation says "required"


def test_errors_are_sorted_to_their_fields() -> None:
    fields = [
        forms.FormField("n", "N", "integer", True),
        forms.FormField("to", "To", "lines", True),
    ]
    errors = forms.errors_by_field(
        [
            {"loc": ("input_data", "n"), "msg": "Input should be a valid integer"},
            {"loc": ("input_data", "to", 1), "msg": "not an address"},
            {"loc": ("input_data",), "msg": "give html or body"},
            {"loc": ("priority",), "msg": "must be 1..5"},
        ],
        fields,
    )
    assert errors == {
        "n": "Input should be a valid integer",
        "to": "line 2: not an address",
        forms.FORM_ERRORS: "give html or body",
        "priority": "must be 1..5",
    }
