"""`python -m taskq_core.cli ...`: the `taskq` command, for child processes of `dev` and `demo`."""

import sys

from taskq_core.cli.main import main

sys.exit(main())
