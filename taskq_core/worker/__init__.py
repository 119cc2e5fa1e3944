"""The worker process: `loop` pops ids by priority, claims them with a lease and records how each
attempt ended (`outcomes`, `recorder`); sync task types run in runner processes that pop, claim,
run and record their own (`runner` in each child, `runners` supervising them from the worker,
`slot` the memory they share), forked by the fork server `zygote` through `forkserver`;
`fetching` pops and claims for both; `execution` runs one task; `holding` is what a worker holds,
`beats` its background loops, `announcer` what it publishes, `tuner` how many async tasks it runs
at once; `sweeper` repairs the gaps between PostgreSQL and Redis (with `lost`, `retention`,
`scheduler`); `sql` holds every statement the worker sends, straight through psycopg.

May import the plugin contract, the shared values, `broker` and `db.urls`; never `api`, `cli`
or SQLAlchemy (an ORM per task costs CPU and start-up time the worker does not need).
"""
