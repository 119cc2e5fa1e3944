"""Plugin discovery: `taskq.tasks` entry points, a pluggy PluginManager, the task-type registry."""

from __future__ import annotations

import inspect
import json
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from types import ModuleType
from typing import Any

import pluggy
from pydantic import BaseModel, ConfigDict, RootModel

from taskq_core import hookspecs
from taskq_core.errors import DuplicateTaskTypeError, UnknownTaskTypeError
from taskq_core.task import MIN_TIMEOUT_SECONDS, Task

ENTRY_POINT_GROUP = "taskq.tasks"

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PluginInfo:
    """Where a task type comes from: the plugin's distribution (or module) and version."""

    name: str
    version: str | None


@dataclass(frozen=True)
class PluginFailure:
    """A plugin that failed to load, and why."""

    plugin: str
    entry_point: str
    error: str


@dataclass(frozen=True)
class ScheduleDeclaration:
    """A periodic task a plugin declares through `register_schedules`; workers store it."""

    plugin: str
    name: str
    cron: str
    task_type: str
    input_data: dict[str, Any] = field(default_factory=dict)
    timezone: str = "UTC"
    priority: int | None = None
    catch_up: str = "once"


@dataclass(frozen=True)
class TaskType:
    """A registered task type: the plugin's class plus the models the host validates with."""

    cls: type[Task]
    plugin: PluginInfo
    input_model: type[BaseModel]  # the plugin's Input, refusing unknown fields

    @property
    def name(self) -> str:
        return self.cls.name

    @property
    def is_async(self) -> bool:
        return inspect.iscoroutinefunction(self.cls.run)

    def parse_input(self, data: Any) -> BaseModel:
        """`data`, JSON data (a request's `input_data`, or the input as stored), as this type's
        `Input`, validated in Pydantic's JSON mode: the way the API reads a request, so that
        wherever the data comes from a strict model takes exactly what its JSON Schema says (an
        ISO 8601 string for a datetime, an array for a tuple, a value for an Enum). Raises
        pydantic's ValidationError; `inputs.check_input` first makes sure `data` is JSON."""
        text = json.dumps(data, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        return self.input_model.model_validate_json(text)

    def defaults(self) -> dict[str, Any]:
        return {
            "priority": self.cls.priority,
            "max_attempts": self.cls.max_attempts,
            "timeout_seconds": self.cls.timeout_seconds,
        }

    def describe(self) -> dict[str, Any]:
        """The public description served by `GET /task-types`."""
        return {
            "name": self.name,
            "description": self.cls.description,
            "plugin": {"name": self.plugin.name, "version": self.plugin.version},
            "is_async": self.is_async,
            "input_schema": self.cls.Input.model_json_schema(),
            "output_schema": self.cls.Output.model_json_schema(),
            "defaults": self.defaults(),
            "limits": {
                "max_attempts": self.cls.max_attempts_cap,
                "min_timeout_seconds": MIN_TIMEOUT_SECONDS,
                "max_timeout_seconds": self.cls.max_timeout_seconds,
            },
        }


@dataclass
class Registry:
    """Every task type the host knows, by name, and the plugins that failed to load."""

    types: dict[str, TaskType] = field(default_factory=dict)
    failures: list[PluginFailure] = field(default_factory=list)
    plugins: dict[str, PluginInfo] = field(default_factory=dict)
    schedules: list[ScheduleDeclaration] = field(default_factory=list)

    def __iter__(self) -> Iterator[TaskType]:
        return iter(sorted(self.types.values(), key=lambda t: t.name))

    def __contains__(self, name: object) -> bool:
        return name in self.types

    def get(self, name: str) -> TaskType:
        try:
            return self.types[name]
        except KeyError:
            raise UnknownTaskTypeError(
                f"unknown task type {name!r}; known task types: {self.known_names()}"
            ) from None

    def known_names(self) -> str:
        return ", ".join(sorted(self.types)) or "none (install a plugin such as taskq-fibonacci)"

    @property
    def sync_names(self) -> list[str]:
        """The task types that run in runner processes."""
        return [name for name, task_type in self.types.items() if not task_type.is_async]

    @property
    def has_sync(self) -> bool:
        """Whether any task type runs in runner processes (a worker needs runners only then)."""
        return bool(self.sync_names)


def _forbid_extra(model: type[BaseModel]) -> type[BaseModel]:
    """A subclass of `model` that rejects unknown fields, whatever the plugin configured. A
    RootModel (a union of request shapes, say) has no fields of its own: its members decide."""
    if model.model_config.get("extra") == "forbid" or issubclass(model, RootModel):
        return model
    return type(model.__name__, (model,), {"model_config": ConfigDict(extra="forbid")})


def _check_task_class(cls: Any) -> type[Task]:
    if not (isinstance(cls, type) and issubclass(cls, Task)):
        raise TypeError(f"{cls!r} is not a subclass of taskq_core.Task")
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name:
        raise TypeError(f"{cls.__qualname__} has no `name`")
    for attr in ("Input", "Output"):
        model = getattr(cls, attr, None)
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            raise TypeError(f"{cls.__qualname__}.{attr} must be a pydantic BaseModel subclass")
    if cls.run is Task.run:
        raise TypeError(f"{cls.__qualname__} does not define run()")
    if not 1 <= cls.priority <= 5:
        raise TypeError(f"{cls.__qualname__}.priority must be between 1 and 5")
    if cls.max_attempts < 1:
        raise TypeError(f"{cls.__qualname__}.max_attempts must be at least 1")
    if cls.max_attempts > cls.max_attempts_cap:
        raise TypeError(f"{cls.__qualname__}.max_attempts is above its max_attempts_cap")
    if cls.timeout_seconds is not None and not (
        MIN_TIMEOUT_SECONDS <= cls.timeout_seconds <= cls.max_timeout_seconds
    ):
        raise TypeError(
            f"{cls.__qualname__}.timeout_seconds must be between {MIN_TIMEOUT_SECONDS:g} and "
            f"its max_timeout_seconds ({cls.max_timeout_seconds:g})"
        )
    return cls


def _distribution(entry_point: EntryPoint) -> PluginInfo | None:
    """The name and version of the distribution declaring `entry_point`, from one read of its
    metadata: each `dist.metadata` (and `dist.version`) reads and parses the file again."""
    if entry_point.dist is None:
        return None
    metadata = entry_point.dist.metadata
    return PluginInfo(metadata["Name"], metadata["Version"])


def load_registry(modules: Iterable[ModuleType] = (), *, use_entry_points: bool = True) -> Registry:
    """Load the installed plugins (and `modules`, for tests and embedding) into a registry.

    A plugin that fails to import or to register is recorded and logged, never raised: one broken
    plugin must not take the API or a worker down. Two plugins claiming one task type name is a
    configuration error the operator must fix, so that raises DuplicateTaskTypeError.
    """
    manager = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    manager.add_hookspecs(hookspecs)
    registry = Registry()
    # (name, where it comes from, module, its distribution if an entry point's has metadata)
    candidates: list[tuple[str, str, ModuleType, PluginInfo | None]] = []

    if use_entry_points:
        for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
            dist = _distribution(ep)
            try:
                module = ep.load()
            except Exception as exc:
                _record_failure(registry, dist.name if dist else ep.name, ep.value, exc)
                continue
            candidates.append((ep.name, ep.value, module, dist))
    candidates.extend((module.__name__, module.__name__, module, None) for module in modules)

    owners: dict[str, str] = {}
    for plugin_name, source, module, dist in candidates:
        info = dist or PluginInfo(module.__name__, getattr(module, "__version__", None))
        try:
            manager.register(module, name=plugin_name)
            caller = manager.subset_hook_caller(
                "register_task_types",
                remove_plugins=[p for p in manager.get_plugins() if p is not module],
            )
            found: list[type[Task]] = []

            def register(cls: Any, found: list[type[Task]] = found) -> None:
                found.append(_check_task_class(cls))

            caller(register=register)
            declared = _declared_schedules(manager, module, info.name)
        except Exception as exc:
            if manager.is_registered(module):
                manager.unregister(module)
            _record_failure(registry, info.name, source, exc)
            continue
        for cls in found:
            if cls.name in owners:
                raise DuplicateTaskTypeError(
                    f"task type {cls.name!r} is registered by both {owners[cls.name]!r} "
                    f"and {info.name!r}; uninstall or disable one of them"
                )
            owners[cls.name] = info.name
            registry.types[cls.name] = TaskType(cls, info, _forbid_extra(cls.Input))
        registry.plugins[info.name] = info
        registry.schedules.extend(declared)
    return registry


def _declared_schedules(
    manager: pluggy.PluginManager, module: ModuleType, plugin: str
) -> list[ScheduleDeclaration]:
    """The schedules `module` declares; their cron, zone and input are checked where stored."""
    caller = manager.subset_hook_caller(
        "register_schedules", remove_plugins=[p for p in manager.get_plugins() if p is not module]
    )
    declared: list[ScheduleDeclaration] = []

    def register(
        name: str,
        cron: str,
        task_type: str,
        input_data: dict[str, Any] | None = None,
        *,
        timezone: str = "UTC",
        priority: int | None = None,
        catch_up: str = "once",
    ) -> None:
        for label, value in (
            ("name", name),
            ("cron", cron),
            ("task_type", task_type),
            ("timezone", timezone),
            ("catch_up", catch_up),
        ):
            if not isinstance(value, str) or not value:
                raise TypeError(f"register_schedules: {label} must be a non-empty string")
        if input_data is not None and not isinstance(input_data, dict):
            raise TypeError(f"register_schedules: {name}: input_data must be a dict")
        if priority is not None and not isinstance(priority, int):
            raise TypeError(f"register_schedules: {name}: priority must be an int")
        declared.append(
            ScheduleDeclaration(
                plugin, name, cron, task_type, dict(input_data or {}), timezone, priority, catch_up
            )
        )

    caller(register=register)
    return declared


def _record_failure(registry: Registry, plugin: str, entry_point: str, exc: BaseException) -> None:
    reason = f"{type(exc).__name__}: {exc}"
    log.error("plugin %s (%s) failed to load: %s", plugin, entry_point, reason)
    registry.failures.append(PluginFailure(plugin, entry_point, reason))
