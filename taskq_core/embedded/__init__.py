"""Real PostgreSQL and Valkey servers, run from pip packages for `taskq dev` and the tests."""

from taskq_core.embedded.errors import EmbeddedError
from taskq_core.embedded.servers import EmbeddedServers, default_data_dir

__all__ = ["EmbeddedError", "EmbeddedServers", "default_data_dir"]
