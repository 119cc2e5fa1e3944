"""Plugin discovery: entry points through pluggy, broken plugins reported, duplicates refused."""

from __future__ import annotations

import json
import subprocess
import types
from pathlib import Path

import pytest
from pydantic import BaseModel

from taskq_core import Task, TaskContext, hookimpl, hookspecs
from taskq_core.errors import DuplicateTaskTypeError, UnknownTaskTypeError
from taskq_core.plugins import load_registry
from tests.conftest import Servers, free_port, taskq, wait_for


class Numbers(BaseModel):
    n: int


def plugin_module(
    name: str, *task_classes: type[Task], fail: Exception | None = None
) -> types.ModuleType:
    module = types.ModuleType(name)

    @hookimpl
    def register_task_types(register):  # type: ignore[no-untyped-def]
        if fail is not None:
            raise fail
        for cls in task_classes:
            register(cls)

    module.register_task_types = register_task_types  # type: ignore[attr-defined]
    return module


class Double(Task):
    name = "Double"
    Input = Numbers
    Output = Numbers

    def run(self, data: Numbers, ctx: TaskContext) -> Numbers:
        return Numbers(n=data.n * 2)


def test_installed_plugins_load_through_entry_points() -> None:
    registry = load_registry()
    assert "FibonacciTask" in registry
    assert "EmailTask" in registry
    assert registry.types["FibonacciTask"].plugin.name == "taskq-fibonacci"
    assert registry.failures == []


def test_hook_register_task_types_from_modules_registered_directly() -> None:
    registry = load_registry([plugin_module("my_plugin", Double)], use_entry_points=False)
    assert [t.name for t in registry] == ["Double"]
    assert registry.types["Double"].plugin.name == "my_plugin"


def test_a_plugin_whose_hook_raises_is_recorded_not_raised() -> None:
    broken = plugin_module("broken_hook", fail=RuntimeError("no config"))
    registry = load_registry([broken, plugin_module("fine", Double)], use_entry_points=False)
    assert "Double" in registry
    (failure,) = registry.failures
    assert failure.plugin == "broken_hook"
    assert failure.error == "RuntimeError: no config"


@pytest.mark.parametrize(
    ("attrs", "message"),
    [
        ({"name": ""}, "has no `name`"),
        ({"Input": dict}, "Input must be a pydantic BaseModel"),
        ({"priority": 9}, "priority must be between 1 and 5"),
        ({"max_attempts": 0}, "max_attempts must be at least 1"),
    ],
)
def test_malformed_task_classes_are_reported(attrs: dict[str, object], message: str) -> None:
    bad = type("Bad", (Double,), attrs)
    registry = load_registry([plugin_module("bad", bad)], use_entry_points=False)
    assert registry.types == {}
    assert message in registry.failures[0].error


def test_a_class_without_run_is_reported() -> None:
    no_run = type("NoRun", (Task,), {"name": "NoRun", "Input": Numbers, "Output": Numbers})
    registry = load_registry([plugin_module("norun", no_run)], use_entry_points=False)
    assert "does not define run()" in registry.failures[0].error


def test_two_plugins_claiming_one_name_is_an_error_naming_both() -> None:
    twin = type("Twin", (Double,), {})
    with pytest.raises(DuplicateTaskTypeError) as info:
        load_registry(
            [plugin_module("first", Double), plugin_module("second", twin)], use_entry_points=False
        )
    assert "'Double'" in str(info.value)
    assert "'first'" in str(info.value)
    assert "'second'" in str(info.value)


def test_unknown_type_lookup_names_the_known_ones() -> None:
    registry = load_registry([plugin_module("p", Double)], use_entry_points=False)
    with pytest.raises(UnknownTaskTypeError, match="known task types: Double"):
        registry.get("Triple")


def test_the_input_model_refuses_extra_fields() -> None:
    registry = load_registry([plugin_module("p", Double)], use_entry_points=False)
    model = registry.types["Double"].input_model
    assert model.model_validate({"n": 1}).n == 1  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="extra"):
        model.model_validate({"n": 1, "m": 2})


def test_taskq_plugins_lists_types_and_failures(sites: dict[str, Path], servers: Servers) -> None:
    env = servers.env(sites["taskq-testkit"], sites["taskq-broken"], COLUMNS="200")
    result = subprocess.run(taskq("plugins"), env=env, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    for expected in (
        "taskq-fibonacci",
        "FibonacciTask",
        "taskq-testkit",
        "AsyncSleepTask",
        "async",
    ):
        assert expected in result.stdout
    # Piped: one tab-separated line per type, failures apart on stderr.
    assert "taskq-fibonacci\t0.1.0\tFibonacciTask\tsync\t" in result.stdout
    assert "failed to load" in result.stderr
    assert "taskq-broken" in result.stderr
    assert "taskq_no_such_dependency" in result.stderr
    listing = json.loads(
        subprocess.run(
            taskq("plugins", "--json"), env=env, capture_output=True, text=True, check=True
        ).stdout
    )
    assert {"plugin": "taskq-fibonacci", "task_type": "FibonacciTask"}.items() <= next(
        t for t in listing["task_types"] if t["task_type"] == "FibonacciTask"
    ).items()
    assert listing["failures"][0]["plugin"] == "taskq-broken"
    strict = subprocess.run(
        taskq("plugins", "--strict"), env=env, capture_output=True, text=True, check=False
    )
    assert strict.returncode == 1


def test_duplicate_names_stop_the_api_and_the_worker_at_start(
    sites: dict[str, Path], servers: Servers
) -> None:
    env = servers.env(sites["taskq-dupe"])
    for args in (taskq("api", "--port", str(free_port())), taskq("worker")):
        result = subprocess.run(
            args, env=env, capture_output=True, text=True, timeout=60, check=False
        )
        assert result.returncode != 0
        output = result.stdout + result.stderr
        assert "FibonacciTask" in output
        assert "taskq-fibonacci" in output
        assert "taskq-dupe" in output


def test_a_broken_plugin_does_not_stop_a_worker(
    sites: dict[str, Path], clean: Servers, tmp_path: Path
) -> None:
    log = tmp_path / "worker.log"
    with log.open("wb") as out:
        worker = subprocess.Popen(
            taskq("worker"),
            env=clean.env(sites["taskq-broken"]),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for(lambda: "started" in log.read_text(), what="the worker to start")
        text = log.read_text()
        assert "plugin taskq-broken" in text
        assert "failed to load" in text
        assert worker.poll() is None
    finally:
        worker.terminate()
        assert worker.wait(15) == 0


def test_hook_register_schedules_declares_periodic_tasks() -> None:
    module = types.ModuleType("cron_plugin")

    @hookimpl
    def register_schedules(register):  # type: ignore[no-untyped-def]
        register("nightly", "0 3 * * *", "Double", {"n": 2}, timezone="Europe/Paris", priority=2)

    module.register_schedules = register_schedules  # type: ignore[attr-defined]
    module.register_task_types = plugin_module("x", Double).register_task_types  # type: ignore[attr-defined]
    registry = load_registry([module], use_entry_points=False)
    (declared,) = registry.schedules
    assert (declared.plugin, declared.name, declared.cron, declared.task_type) == (
        "cron_plugin",
        "nightly",
        "0 3 * * *",
        "Double",
    )
    assert (declared.input_data, declared.timezone, declared.priority) == (
        {"n": 2},
        "Europe/Paris",
        2,
    )
    assert declared.catch_up == "once"


def test_a_plugin_whose_register_schedules_raises_is_recorded() -> None:
    module = types.ModuleType("bad_cron")

    @hookimpl
    def register_schedules(register):  # type: ignore[no-untyped-def]
        register("no-cron")  # missing arguments

    module.register_schedules = register_schedules  # type: ignore[attr-defined]
    registry = load_registry([module, plugin_module("fine", Double)], use_entry_points=False)
    assert "Double" in registry
    assert registry.schedules == []
    (failure,) = registry.failures
    assert failure.plugin == "bad_cron"
    assert "TypeError" in failure.error


def test_every_hookspec_has_a_test() -> None:
    """As datasette does: a hook nobody tests is a hook nobody knows works."""
    marker = f"{hookspecs.PROJECT_NAME}_spec"
    specs = {name for name, obj in vars(hookspecs).items() if hasattr(obj, marker)}
    assert specs == {"register_task_types", "register_schedules"}
    tests = [name for name in globals() if name.startswith("test_hook_")]
    for spec in specs:
        assert any(t.startswith(f"test_hook_{spec}") for t in tests), f"no test_hook_{spec}_*"
