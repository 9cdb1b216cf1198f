"""What every service shares: one error shape, the request guard, probes, metrics, request ids and JSON logs."""

from suite.web.errors import ApiError, install_error_handlers
from suite.web.instrument import instrument
from suite.web.state import from_state

__all__ = ["ApiError", "from_state", "install_error_handlers", "instrument"]
