"""The command line: `taskq` and `taskq-worker` parse their arguments here (`main`) and delegate;
`dev` and `demo` run the whole system on one machine; `render` prints tables for people.

May import every other part of taskq (it is the top of the stack); nothing imports it.
"""
