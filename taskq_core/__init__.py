"""taskq: a plugin-based distributed task queue (PostgreSQL for records, Redis for dispatch).

This top level holds what every part shares. The plugin author's contract: `Task`, `TaskContext`,
`Retry`, `PermanentError` (`task`) and `hookimpl` (`hookspecs`), exported here, and plugin
discovery (`plugins`); these import nothing else of taskq but `errors`. The shared values:
`settings`, `errors`, `records`. The shared services: `broker` (every Redis command and key),
`enqueue` (validate, record, dispatch), `client` (enqueueing from Python), `devstate` (finding a
running `taskq dev`), `processes` (children that die with their parent) and `faults` (test-only
fault points). The parts that run: `api/`, `worker/`, `cli/`, over `db/` and `embedded/`.
"""

from taskq_core.hookspecs import hookimpl
from taskq_core.task import PermanentError, Retry, Task, TaskContext

__all__ = ["PermanentError", "Retry", "Task", "TaskContext", "hookimpl"]
