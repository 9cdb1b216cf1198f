"""What every service's HTTP layer shares: one error shape, the request guard, transport checks, request
ids and JSON logs. The assembly of a service (these + probes, metrics and the auth layer) is
``suite.instrument``, one layer above this package and ``suite.auth``."""

from suite.web.errors import ApiError, install_error_handlers
from suite.web.state import from_state

__all__ = ["ApiError", "from_state", "install_error_handlers"]
