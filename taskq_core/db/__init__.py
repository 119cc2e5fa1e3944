"""PostgreSQL as the API and the command line see it: the schema (`models`), its Alembic
`migrations`, URLs (`urls`) and engines (`engines`), and the queries behind the routes and
commands (`storage`, `tasks`, `workers`), all through SQLAlchemy.

May import the shared top level (settings, errors, records). The worker never imports this
package except `urls`, which has no SQLAlchemy; its own statements live in `taskq_core.worker.sql`.
"""
