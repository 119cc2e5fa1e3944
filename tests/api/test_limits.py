"""Limits and hostile input over real HTTP: every refusal a clear 4xx, nothing written, and the
good requests around a bad one unharmed."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import httpx
import pytest

from tests.api.test_api import nothing_written
from tests.conftest import Api, Servers

FAIL = {"task_type": "FailTask", "input_data": {"message": "x"}}


def _errors(response: httpx.Response) -> list[dict[str, Any]]:
    detail = response.json()["detail"]
    assert isinstance(detail, list), detail
    return detail


def _locs(response: httpx.Response) -> list[list[object]]:
    return [e["loc"] for e in _errors(response)]


def test_urllib_hears_the_413_for_a_2_mib_body_every_time(api: Api, clean: Servers) -> None:
    # urllib writes the whole body before reading: an answer sent while the body still arrives,
    # followed by a close, reached it as "connection reset by peer" on many tries.
    body = json.dumps(
        {"task_type": "FibonacciTask", "input_data": {"n": 1, "pad": "x" * (2 * 1024 * 1024)}}
    ).encode()
    for attempt in range(40):
        request = urllib.request.Request(
            f"{api.url}/tasks/",
            data=body,
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(request, timeout=30)
        assert info.value.code == 413, f"attempt {attempt}"
        assert "limit" in json.loads(info.value.read())["detail"]
    nothing_written(clean)


@pytest.mark.parametrize(
    ("raw", "loc"),
    [
        (b'{"message": "a\\u0000b"}', ["body", "input_data", "message"]),
        (b'{"mess\\u0000age": "x"}', ["body", "input_data", "mess\x00age"]),
        (b'{"message": NaN}', ["body", "input_data", "message"]),
        (b'{"message": Infinity}', ["body", "input_data", "message"]),
        (b'{"message": [[[1, -Infinity]]]}', ["body", "input_data", "message", 0, 0, 1]),
    ],
    ids=["nul-value", "nul-key", "nan", "infinity", "nested-infinity"],
)
@pytest.mark.parametrize("idempotent", [False, True], ids=["fast-path", "route"])
def test_values_jsonb_cannot_hold_are_422_naming_the_field(
    api: Api, clean: Servers, raw: bytes, loc: list[object], idempotent: bool
) -> None:
    body = b'{"task_type": "FailTask", "input_data": ' + raw + b"}"
    headers = {"Content-Type": "application/json"}
    if idempotent:
        headers["Idempotency-Key"] = "k"
    response = api.client.post("/tasks/", content=body, headers=headers)
    assert response.status_code == 422, response.text
    assert loc in _locs(response)
    nothing_written(clean)


def test_deep_json_is_a_4xx_not_a_500(api: Api, clean: Servers) -> None:
    deep = b'{"task_type": "FailTask", "input_data": {"message": ' + b"[" * 50_000
    deep += b"]" * 50_000 + b"}}"
    for headers in ({}, {"Idempotency-Key": "deep"}):
        response = api.client.post(
            "/tasks/", content=deep, headers={"Content-Type": "application/json", **headers}
        )
        assert response.status_code == 400, response.text
    # Deep enough to refuse, shallow enough to parse: a 422 naming the field, no echo of it.
    nested: Any = "x"
    for _ in range(500):
        nested = [nested]
    response = api.client.post(
        "/tasks/", json={"task_type": "FailTask", "input_data": {"message": nested}}
    )
    assert response.status_code == 422
    (error,) = _errors(response)
    assert error["type"] == "too_deep"
    assert error.get("input") is None
    nothing_written(clean)


def test_input_over_its_size_limit_is_422(api: Api, clean: Servers) -> None:
    big = {"task_type": "FailTask", "input_data": {"message": "x" * (300 * 1024)}}
    response = api.client.post("/tasks/", json=big)
    assert response.status_code == 422
    assert _errors(response)[0]["type"] == "too_large"
    assert _errors(response)[0]["loc"] == ["body", "input_data"]
    nothing_written(clean)


def test_a_cursor_above_bigint_is_422(api: Api) -> None:
    response = api.client.get("/tasks/", params={"cursor": "9223372036854775808"})
    assert response.status_code == 422
    assert _locs(response) == [["query", "cursor"]]
    assert api.client.get("/tasks/", params={"cursor": "9223372036854775807"}).status_code == 200


def test_page_and_batch_sizes_are_limited(api: Api, clean: Servers) -> None:
    response = api.client.get("/tasks/", params={"limit": 1001})
    assert response.status_code == 422
    assert _locs(response) == [["query", "limit"]]
    batch = {"tasks": [FAIL] * 1001}
    response = api.client.post("/tasks/batch", json=batch)
    assert response.status_code == 422
    assert _locs(response) == [["body", "tasks"]]
    nothing_written(clean)


@pytest.mark.parametrize(
    ("options", "loc"),
    [
        ({"timeout_seconds": 1e-9}, "timeout_seconds"),
        ({"timeout_seconds": 0.49}, "timeout_seconds"),
        ({"timeout_seconds": 86_401}, "timeout_seconds"),
        ({"max_attempts": 100}, "max_attempts"),
        ({"max_attempts": 26}, "max_attempts"),
    ],
)
def test_requests_cannot_make_runners_thrash(
    api: Api, clean: Servers, options: dict[str, object], loc: str
) -> None:
    response = api.client.post("/tasks/", json={**FAIL, **options})
    assert response.status_code == 422, response.text
    assert ["body", loc] in _locs(response)
    nothing_written(clean)


def test_the_caps_themselves_are_accepted_and_described(api: Api) -> None:
    response = api.client.post("/tasks/", json={**FAIL, "timeout_seconds": 0.5, "max_attempts": 25})
    assert response.status_code == 201
    types = {t["name"]: t for t in api.client.get("/task-types").json()["task_types"]}
    assert types["FailTask"]["limits"] == {
        "max_attempts": 25,
        "min_timeout_seconds": 0.5,
        "max_timeout_seconds": 86_400.0,
    }


def test_listings_carry_no_bodies(api: Api) -> None:
    created = api.client.post("/tasks/", json={**FAIL, "input_data": {"message": "secret"}})
    (item,) = api.client.get("/tasks/").json()["tasks"]
    assert item["id"] == created.json()["id"]
    assert not {"input_data", "result", "error"} & set(item)
    assert {"status", "attempts", "max_attempts", "run_at", "worker_id"} <= set(item)
    assert "secret" not in api.client.get("/tasks/").text
    assert api.client.get(f"/tasks/{item['id']}").json()["input_data"] == {"message": "secret"}


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("GET", "/tasks/batch", "POST"),
        ("DELETE", "/tasks/", "GET, POST"),
        ("HEAD", "/tasks/", "GET, POST"),
        ("PUT", "/tasks/1", "GET"),
        ("GET", "/tasks/1/cancel", "POST"),
        ("POST", "/health", "GET"),
    ],
)
def test_wrong_methods_are_405_with_the_right_allow(
    api: Api, method: str, path: str, allow: str
) -> None:
    response = api.client.request(method, path)
    assert response.status_code == 405, response.text
    assert response.headers["allow"] == allow


def test_openapi_lists_every_status_with_the_error_schema(api: Api) -> None:
    spec = api.client.get("/openapi.json").json()
    submit = spec["paths"]["/tasks/"]["post"]["responses"]
    assert {"200", "201", "400", "409", "413", "422", "429", "503"} <= set(submit)
    error = {"$ref": "#/components/schemas/ErrorMessage"}
    for code in ("409", "413", "429", "503"):
        assert submit[code]["content"]["application/json"]["schema"] == error
    # A body that is not JSON: where reading it failed, listed as a 422's fields are.
    unreadable = {"$ref": "#/components/schemas/FieldErrors"}
    assert submit["400"]["content"]["application/json"]["schema"] == unreadable
    assert "Retry-After" in submit["429"]["headers"]
    listing = spec["paths"]["/tasks/"]["get"]["responses"]
    assert {"200", "422", "429", "503"} <= set(listing)
    one = spec["paths"]["/tasks/{task_id}"]["get"]["responses"]
    assert {"200", "404", "422", "429", "503"} <= set(one)
    cancel = spec["paths"]["/tasks/{task_id}/cancel"]["post"]["responses"]
    assert {"200", "202", "404", "409", "413", "422", "429", "503"} <= set(cancel)
    assert {"200", "503"} <= set(spec["paths"]["/ready"]["get"]["responses"])
    # The limits this API runs with and the task types it has, not only the models' bounds.
    schemas = spec["components"]["schemas"]
    # One request branch per installed task type (the union's discriminator maps them).
    assert {"FibonacciTask", "FailTask"} <= set(schemas["TaskRequest"]["discriminator"]["mapping"])
    # Not both start times, in every branch as in the model.
    assert schemas["FibonacciTaskRequest"]["not"]["required"] == ["run_at", "delay_seconds"]
    assert schemas["TaskBatch"]["properties"]["tasks"]["maxItems"] == 1000
    (limit,) = [p for p in spec["paths"]["/tasks/"]["get"]["parameters"] if p["name"] == "limit"]
    assert limit["schema"]["maximum"] == 1000
