"""Keep compose.yml correct without a Docker engine.

Two layers: the Compose Specification schema vendored in check-jsonschema (structure,
unknown keys, types) and project rules the schema cannot express (depends_on targets,
healthchecks, declared volumes, loopback-only ports, minimum image versions).

YAML is read with ruamel.yaml, a dependency of check-jsonschema, so nothing extra is needed.
"""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

COMPOSE_FILE = Path(__file__).resolve().parent.parent / "compose.yml"


# --------------------------------------------------------------------------- helpers


def _yaml() -> YAML:
    return YAML(typ="safe", pure=True)


def load_compose(path: Path) -> dict[str, Any]:
    data = _yaml().load(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict), f"{path}: top level must be a mapping"
    return data


def dump_compose(data: dict[str, Any], path: Path) -> None:
    with path.open("w", encoding="utf-8") as fh:
        _yaml().dump(data, fh)


def check_jsonschema_exe() -> str:
    candidate = Path(sys.executable).parent / "check-jsonschema"
    if candidate.is_file():
        return str(candidate)
    found = shutil.which("check-jsonschema")
    if found is None:
        pytest.fail(
            "check-jsonschema executable not found next to "
            f"{sys.executable} or on PATH; install the 'test' extra"
        )
    return found


def run_schema_check(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [check_jsonschema_exe(), "--builtin-schema", "vendor.compose-spec", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def services(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return doc.get("services") or {}


def depends_on_problems(doc: dict[str, Any]) -> list[str]:
    """depends_on entries (list or mapping form) that name no defined service."""
    defined = set(services(doc))
    problems = []
    for name, svc in services(doc).items():
        deps = svc.get("depends_on") or []
        # List form: [a, b]; mapping form: {a: {condition: ...}}. Iterating covers both.
        for dep in deps:
            if dep not in defined:
                problems.append(f"service {name!r} depends_on undefined service {dep!r}")
    return problems


def healthcheck_problems(doc: dict[str, Any]) -> list[str]:
    problems = []
    for name, svc in services(doc).items():
        hc = svc.get("healthcheck")
        if not hc or hc.get("disable") is True or not hc.get("test"):
            problems.append(f"service {name!r} has no healthcheck")
        elif hc["test"] in (["NONE"], "NONE"):
            problems.append(f"service {name!r} disables its healthcheck")
    return problems


def _is_named_volume_source(source: str) -> bool:
    # Bind mounts are paths: absolute, relative (./ ../), home (~) or a Windows drive.
    return not (source.startswith(("/", ".", "~")) or re.match(r"^[A-Za-z]:[\\/]", source))


def named_volumes_used(svc: dict[str, Any]) -> list[str]:
    names = []
    for vol in svc.get("volumes") or []:
        if isinstance(vol, str):
            parts = vol.split(":")
            if len(parts) >= 2 and _is_named_volume_source(parts[0]):
                names.append(parts[0])
        elif isinstance(vol, dict) and vol.get("type", "volume") == "volume" and vol.get("source"):
            names.append(vol["source"])
    return names


def volume_problems(doc: dict[str, Any]) -> list[str]:
    declared = set(doc.get("volumes") or {})
    return [
        f"service {name!r} uses volume {vol!r} not declared under top-level volumes"
        for name, svc in services(doc).items()
        for vol in named_volumes_used(svc)
        if vol not in declared
    ]


def port_host_ip(port: Any) -> str | None:
    """Host IP a published port binds to, or None when it binds to all interfaces."""
    if isinstance(port, dict):
        return port.get("host_ip")
    spec = str(port).split("/", 1)[0]  # drop "/tcp"
    if spec.startswith("["):  # "[::1]:8080:80"
        ip, _, rest = spec[1:].partition("]")
        return ip if rest.startswith(":") and rest.count(":") >= 2 else None
    parts = spec.split(":")
    return parts[0] if len(parts) == 3 else None


def port_problems(doc: dict[str, Any]) -> list[str]:
    return [
        f"service {name!r} publishes {port!r} beyond 127.0.0.1"
        for name, svc in services(doc).items()
        for port in svc.get("ports") or []
        if port_host_ip(port) != "127.0.0.1"
    ]


def image_major(image: str) -> int:
    """Major version from an image reference: 'docker.io/library/redis:7.4-alpine' -> 7."""
    ref = image.split("@", 1)[0]
    _, sep, tag = ref.rpartition(":")
    if not sep or "/" in tag:  # no tag, or the colon belonged to a registry port
        raise ValueError(f"image {image!r} has no version tag")
    match = re.match(r"^(\d+)(?:[.-]|$)", tag)
    if match is None:
        raise ValueError(f"image {image!r} tag {tag!r} does not start with a version")
    return int(match.group(1))


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_compose(COMPOSE_FILE)


# --------------------------------------------------------------------------- schema


def test_compose_file_matches_compose_spec_schema() -> None:
    result = run_schema_check(COMPOSE_FILE)
    assert result.returncode == 0, (
        f"check-jsonschema exited {result.returncode}\n{result.stdout}\n{result.stderr}"
    )


def test_no_obsolete_version_key(compose: dict[str, Any]) -> None:
    assert "version" not in compose


# --------------------------------------------------------------------------- project rules


def test_only_the_two_servers(compose: dict[str, Any]) -> None:
    assert set(services(compose)) == {"postgres", "redis"}


def test_depends_on_names_defined_services(compose: dict[str, Any]) -> None:
    assert depends_on_problems(compose) == []


def test_every_service_has_healthcheck(compose: dict[str, Any]) -> None:
    assert healthcheck_problems(compose) == []


def test_named_volumes_are_declared(compose: dict[str, Any]) -> None:
    assert volume_problems(compose) == []


def test_ports_bind_to_loopback(compose: dict[str, Any]) -> None:
    assert port_problems(compose) == []


@pytest.mark.parametrize(("service", "minimum"), [("postgres", 16), ("redis", 7)])
def test_image_major_version(compose: dict[str, Any], service: str, minimum: int) -> None:
    image = services(compose)[service]["image"]
    assert image.split("/")[-1].startswith(f"{service}:"), image
    assert image_major(image) >= minimum, image


def test_postgres_settings(compose: dict[str, Any]) -> None:
    pg = services(compose)["postgres"]
    env = pg["environment"]
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    assert env == {"POSTGRES_USER": "taskq", "POSTGRES_PASSWORD": "taskq", "POSTGRES_DB": "taskq"}
    assert "pgdata:/var/lib/postgresql/data" in pg["volumes"]
    assert pg["ports"] == ["127.0.0.1:5432:5432"]
    hc = pg["healthcheck"]
    assert "pg_isready -U taskq -d taskq" in " ".join(hc["test"])
    assert {"interval", "timeout", "retries", "start_period"} <= set(hc)


def test_redis_settings(compose: dict[str, Any]) -> None:
    redis = services(compose)["redis"]
    command = redis["command"]
    if isinstance(command, str):
        command = command.split()
    assert command[0] == "redis-server"
    assert "--appendonly" in command
    assert command[command.index("--appendonly") + 1] == "yes"
    assert "redisdata:/data" in redis["volumes"]
    assert redis["ports"] == ["127.0.0.1:6379:6379"]
    assert "redis-cli ping" in " ".join(redis["healthcheck"]["test"])


def test_header_documents_usage() -> None:
    text = COMPOSE_FILE.read_text(encoding="utf-8")
    assert "docker compose up -d" in text
    assert (
        "export TASKQ_DATABASE_URL=postgresql://taskq:taskq@localhost:5432/taskq "
        "TASKQ_REDIS_URL=redis://localhost:6379/0"
    ) in text


# --------------------------------------------------------------------------- the checks can fail


@pytest.mark.parametrize(
    "depends_on",
    [["ghost"], {"ghost": {"condition": "service_healthy"}}],
    ids=["list-form", "mapping-form"],
)
def test_depends_on_checker_catches_missing_service(
    compose: dict[str, Any], tmp_path: Path, depends_on: Any
) -> None:
    broken = copy.deepcopy(compose)
    broken["services"]["redis"]["depends_on"] = depends_on
    path = tmp_path / "compose.yml"
    dump_compose(broken, path)

    assert depends_on_problems(load_compose(path)) == [
        "service 'redis' depends_on undefined service 'ghost'"
    ]
    # The schema cannot see this mistake, which is why the checker exists.
    assert run_schema_check(path).returncode == 0


def test_schema_check_catches_unknown_key(compose: dict[str, Any], tmp_path: Path) -> None:
    broken = copy.deepcopy(compose)
    broken["services"]["postgres"]["helthcheck"] = {"test": ["CMD", "true"]}
    path = tmp_path / "compose.yml"
    dump_compose(broken, path)

    result = run_schema_check(path)
    assert result.returncode != 0, result.stdout
    assert "helthcheck" in result.stdout + result.stderr


def test_other_checkers_catch_mistakes(compose: dict[str, Any]) -> None:
    broken = copy.deepcopy(compose)
    pg = broken["services"]["postgres"]
    del pg["healthcheck"]
    pg["volumes"] = ["undeclared:/var/lib/postgresql/data", "./init:/docker-entrypoint-initdb.d"]
    pg["ports"] = ["5432:5432", {"target": 5432, "published": "5433"}]
    pg["image"] = "postgres:15-alpine"

    assert healthcheck_problems(broken) == ["service 'postgres' has no healthcheck"]
    assert volume_problems(broken) == [
        "service 'postgres' uses volume 'undeclared' not declared under top-level volumes"
    ]
    assert len(port_problems(broken)) == 2
    assert image_major(pg["image"]) == 15


@pytest.mark.parametrize(
    ("image", "major"),
    [
        ("postgres:17", 17),
        ("postgres:16.4-bookworm", 16),
        ("redis:7-alpine", 7),
        ("redis:7.4", 7),
        ("localhost:5000/library/redis:7.2@sha256:" + "0" * 64, 7),
    ],
)
def test_image_major_parses_tags(image: str, major: int) -> None:
    assert image_major(image) == major


@pytest.mark.parametrize("image", ["postgres", "redis:latest", "localhost:5000/redis"])
def test_image_major_rejects_unversioned(image: str) -> None:
    with pytest.raises(ValueError, match=r"version tag|does not start with a version"):
        image_major(image)
