"""One error shape for every service: ``{"error": {"message", "type", "code"}}``."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from suite.storage import InsufficientStorage, is_disk_full
from suite.web.disconnect import ClientGone

log = logging.getLogger(__name__)

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    409: "conflict_error",
    413: "request_too_large",
    422: "invalid_request_error",
    429: "rate_limit_error",
    502: "upstream_error",
    503: "service_unavailable",
    504: "upstream_timeout",
    507: "insufficient_storage",
}


class ApiError(Exception):
    """An error a handler raises on purpose; becomes the common shape with its status."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type or _TYPES.get(status, "api_error")
        self.code = code
        self.headers = headers or {}

    def body(self) -> dict:
        """This error in the common shape."""
        return error_body(self.status, self.message, self.type, self.code)


def error_body(status: int, message: str, type: str | None = None, code: str | None = None) -> dict:
    return {"error": {"message": message, "type": type or _TYPES.get(status, "api_error"), "code": code}}


def error_response(
    status: int, message: str, *, type: str | None = None, code: str | None = None, headers=None
) -> JSONResponse:
    return JSONResponse(error_body(status, message, type, code), status_code=status, headers=headers)


def validation_message(exc: RequestValidationError) -> str:
    """A short human message for a request that failed validation (the first five problems)."""
    parts = []
    for err in exc.errors()[:5]:
        if err.get("type") == "json_invalid" or (
                tuple(err.get("loc", ())) == ("body",) and isinstance(err.get("input"), (bytes, str))):
            return f"request body is not valid JSON ({err.get('msg')}); send a JSON object"
        loc = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
        parts.append(f"{loc or 'body'}: {err.get('msg')}")
    return "; ".join(parts) or "invalid request"


def install_error_handlers(app: FastAPI) -> None:
    """Route every exception through the common shape; a client's mistake is never a 500."""

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.message, type=exc.type, code=exc.code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(400, validation_message(exc), code="invalid_parameters")

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        return error_response(exc.status_code, message, headers=getattr(exc, "headers", None))

    @app.exception_handler(ClientGone)
    async def _gone(request: Request, exc: ClientGone) -> JSONResponse:
        # nobody reads this answer; 499 (nginx's "client closed request") keeps it out of the 5xx counts
        log.info("%s; its work was cancelled", exc)
        return error_response(499, str(exc), type="client_closed_request", code="client_disconnected")

    @app.exception_handler(InsufficientStorage)
    async def _no_space(request: Request, exc: InsufficientStorage) -> JSONResponse:
        log.warning("%s %s refused: %s", request.method, request.url.path, exc.message)
        return disk_full_response(exc)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        if is_disk_full(exc):  # a write the reserve did not foresee: still the client's answer is why
            log.error("%s %s failed, the disk is full: %s", request.method, request.url.path, exc)
            return disk_full_response(exc)
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(500, f"internal error: {type(exc).__name__}", type="internal_error")


def disk_full_response(exc: BaseException) -> JSONResponse:
    """507 with the reason: the reserve's figures, or what the failed write said."""
    message = exc.message if isinstance(exc, InsufficientStorage) else (
        f"insufficient storage: the disk is full ({type(exc).__name__}: {str(exc)[:200]}); the write was "
        f"not made. Free space and retry; reads still work")
    return error_response(507, message, code="insufficient_storage", headers={"Retry-After": "30"})
