"""taskq measured against Celery, RQ, Dramatiq and procrastinate: `make bench`."""
