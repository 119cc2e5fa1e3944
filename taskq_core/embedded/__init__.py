"""Real PostgreSQL and Valkey servers, run from pip packages for `taskq dev` and the tests.

Used by the command line (`taskq dev`, `taskq demo`) and the test suite only, never when URLs are
configured. May import the shared top level (settings, errors); nothing of api/, worker/ or db/.
"""

from taskq_core.embedded.errors import EmbeddedError
from taskq_core.embedded.servers import EmbeddedServers, default_data_dir

__all__ = ["EmbeddedError", "EmbeddedServers", "default_data_dir"]
