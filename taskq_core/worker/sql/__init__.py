"""The worker's database access: its statements go straight to psycopg, without SQLAlchemy.

They are fixed statements run for every task (claims, outcomes) or on timers (leases, sweeps),
so an ORM or query builder buys them nothing and costs CPU per task and start-up time. Each
runs in autocommit mode: one round trip (no BEGIN, no COMMIT, no pre-ping) and, being one
statement, still atomic; psycopg prepares them on the server after a few runs (never with
TASKQ_DATABASE_PREPARE=off, for PgBouncer in transaction mode).
"""

from taskq_core.worker.sql.claims import Claims
from taskq_core.worker.sql.connection import CONNECTION_ERRORS
from taskq_core.worker.sql.sweeps import Sweeps

__all__ = ["CONNECTION_ERRORS", "Claims", "Sweeps"]
