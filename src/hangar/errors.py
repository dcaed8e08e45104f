"""The API error tree. Each class is an (HTTP status, ``error.type``) pair.

    ApiError
    ├── InvalidRequest        400 invalid_request_error
    │   ├── Conflict          409 invalid_request_error   (x-should-retry: false)
    │   └── PreconditionFailed 412 invalid_request_error
    ├── AuthenticationFailed  401 authentication_error
    ├── PermissionDenied      403 permission_error
    ├── NotFound              404 not_found_error
    ├── MethodNotAllowed      405 invalid_request_error
    ├── RequestTooLarge       413 request_too_large
    ├── RateLimited           429 rate_limit_error
    └── InternalError         500 api_error

One renderer (``hangar.http.errors``) turns any of them into the envelope
``{"type":"error","error":{"type","message","details"?},"request_id"}``.
"""

from __future__ import annotations

from typing import Any, ClassVar


class ApiError(Exception):
    status: ClassVar[int] = 500
    error_type: ClassVar[str] = "api_error"
    should_retry: ClassVar[bool | None] = None

    def __init__(self, message: str, *, error_code: str | None = None, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details: dict[str, Any] | None = None
        if error_code is not None or details:
            self.details = {"error_code": error_code, **details} if error_code else dict(details)


class InvalidRequest(ApiError):
    status = 400
    error_type = "invalid_request_error"


class Conflict(InvalidRequest):
    status = 409
    should_retry = False


class PreconditionFailed(InvalidRequest):
    status = 412
    should_retry = False


class AuthenticationFailed(ApiError):
    status = 401
    error_type = "authentication_error"


class PermissionDenied(ApiError):
    status = 403
    error_type = "permission_error"


class NotFound(ApiError):
    status = 404
    error_type = "not_found_error"


class MethodNotAllowed(ApiError):
    status = 405
    error_type = "invalid_request_error"


class RequestTooLarge(ApiError):
    status = 413
    error_type = "request_too_large"


class RateLimited(ApiError):
    status = 429
    error_type = "rate_limit_error"


class InternalError(ApiError):
    status = 500
    error_type = "api_error"
