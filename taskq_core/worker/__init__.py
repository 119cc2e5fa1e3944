"""The worker process: `loop` pops ids by priority, claims them with a lease and records how each
attempt ended (`outcomes`, `recorder`); sync task types run in runner processes (`pool` in the
worker, `runner` in each child, both forked by the fork server `zygote` through `forkserver`);
`execution` runs one task; `holding` is what a worker holds, `beats` its background loops,
`announcer` what it publishes, `tuner` how many tasks it runs at once; `sweeper` repairs the gaps
between PostgreSQL and Redis (with `lost`, `retention`, `scheduler`); `sql` holds every statement
the worker sends, straight through psycopg.

May import the plugin contract, the shared values, `broker` and `db.urls`; never `api`, `cli`
or SQLAlchemy (an ORM per task costs CPU and start-up time the worker does not need).
"""
