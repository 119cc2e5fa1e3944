"""The typed OpenAPI document (one request branch per task type) and the offline docs pages."""

from __future__ import annotations

from typing import Any

from tests.conftest import Api

REF = "#/components/schemas/"


def resolve(document: dict[str, Any], ref: dict[str, str]) -> dict[str, Any]:
    schema: dict[str, Any] = document["components"]["schemas"][ref["$ref"].removeprefix(REF)]
    return schema


def test_task_requests_are_a_union_discriminated_by_task_type(api: Api) -> None:
    document = api.client.get("/openapi.json").json()
    types = {t["name"]: t for t in api.client.get("/task-types").json()["task_types"]}
    body = document["paths"]["/tasks/"]["post"]["requestBody"]["content"]["application/json"]
    union = resolve(document, body["schema"])
    assert union["discriminator"]["propertyName"] == "task_type"
    mapping = union["discriminator"]["mapping"]
    assert set(mapping) == set(types)  # one branch per registered type, no more
    assert [b["$ref"] for b in union["oneOf"]] == [mapping[name] for name in sorted(types)]
    for name, described in types.items():
        branch = resolve(document, {"$ref": mapping[name]})
        assert branch["properties"]["task_type"]["const"] == name
        assert branch["additionalProperties"] is False
        assert branch["properties"]["priority"]["default"] == described["defaults"]["priority"]
        input_schema = resolve(document, branch["properties"]["input_data"])
        assert set(input_schema.get("properties", {})) == set(
            described["input_schema"].get("properties", {})
        )
        assert input_schema.get("required", []) == described["input_schema"].get("required", [])
        assert ("input_data" in branch["required"]) == bool(input_schema.get("required"))
        output = document["components"]["schemas"][f"{name}Output"]
        assert set(output.get("properties", {})) == set(
            described["output_schema"].get("properties", {})
        )
    fib = resolve(document, resolve(document, {"$ref": mapping["FibonacciTask"]})["properties"][
        "input_data"
    ])  # fmt: skip
    assert fib["properties"]["n"]["type"] == "integer"
    assert fib["additionalProperties"] is False  # as the API validates: unknown fields refused
    batch = document["components"]["schemas"]["TaskBatch"]["properties"]["tasks"]["items"]
    assert batch == body["schema"]
    # Every reference resolves.
    text = str(document)
    refs = {part.split("'")[0] for part in text.split(REF)[1:]}
    assert refs <= set(document["components"]["schemas"])


def test_unknown_types_are_still_refused_naming_the_known_ones(api: Api) -> None:
    response = api.client.post("/tasks/", json={"task_type": "Nope", "input_data": {}})
    assert response.status_code == 422
    assert "FibonacciTask" in response.json()["detail"][0]["msg"]


def test_docs_and_redoc_load_their_assets_from_the_api(api: Api) -> None:
    for page, assets in (
        ("/docs", ["swagger-ui-bundle.js", "swagger-ui.css"]),
        ("/redoc", ["redoc.standalone.js"]),
    ):
        html = api.client.get(page).text
        assert "cdn.jsdelivr.net" not in html
        assert "fonts.googleapis.com" not in html
        for asset in assets:
            assert f"/docs-assets/{asset}" in html
            response = api.client.get(f"/docs-assets/{asset}")
            assert response.status_code == 200
            assert len(response.content) > 100_000
    assert "/docs-assets/{path}" not in api.client.get("/openapi.json").json()["paths"]


# The model of each error status's body (`/ready`'s 503 is its report of each server instead).
ERROR_MODELS = {"400": "FieldErrors", "422": "ValidationErrors"}


def test_every_error_answer_names_its_body_model(api: Api) -> None:
    document = api.client.get("/openapi.json").json()
    seen: set[str] = set()
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            for status, response in operation["responses"].items():
                if status < "400":
                    continue
                where = f"{method.upper()} {path} {status}"
                schema = response.get("content", {}).get("application/json", {}).get("schema")
                assert schema is not None, f"{where}: no body schema"
                expected = ERROR_MODELS.get(status, "ErrorMessage")
                if (path, status) == ("/ready", "503"):
                    expected = "Readiness"
                assert schema == {"$ref": f"{REF}{expected}"}, where
                seen.add(status)
    assert {"400", "401", "403", "404", "409", "413", "416", "422", "429", "503"} <= seen
    # One shape per status: FastAPI's own 422 model is never used beside ours.
    assert "HTTPValidationError" not in document["components"]["schemas"]
    detail = document["components"]["schemas"]["ValidationErrors"]["properties"]["detail"]
    assert detail["items"] == {"$ref": f"{REF}FieldError"}
    # And a 422 answered has that shape.
    refused = api.client.post("/tasks/", json={"task_type": "FibonacciTask", "input_data": {}})
    assert refused.status_code == 422
    for error in refused.json()["detail"]:
        assert {"type", "loc", "msg"} <= set(error) <= {"type", "loc", "msg", "input"}
