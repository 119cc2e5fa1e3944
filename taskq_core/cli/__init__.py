"""The command line: `taskq` parses its arguments in `main` and `taskq-worker` in `worker` (which
imports only what a worker needs), both run through `running`, and delegate;
`dev` and `demo` run the whole system on one machine; `remote` holds the commands that talk to the
API (through taskq_client); `output` prints tables for people and tab-separated lines or JSON for
scripts; `render` lists plugins; `failures` turns any error into one line.

May import every other part of taskq (it is the top of the stack); nothing imports it.
"""
