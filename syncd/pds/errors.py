"""The PDS failures syncd tells apart. What each means for a retry: :func:`syncd.retry.classify`."""

from __future__ import annotations


class XrpcError(Exception):
    """A failed XRPC call. ``status`` is the HTTP status (0 for transport errors)."""

    def __init__(self, method: str, status: int, error: str, message: str = "") -> None:
        super().__init__(f"{method}: HTTP {status} {error}: {message}"[:500])
        self.method = method
        self.status = status
        self.error = error
        self.message = message

    @property
    def reason(self) -> str:
        """A bounded label for metrics (``syncd_write_errors_total{reason}``)."""
        if self.status == 0:
            return "timeout" if self.error == "timeout" else "connection"
        if self.status == 429:
            return "rate_limited"
        if self.status >= 500:
            return "server_error"
        return "rejected"


ERROR_REASONS = ("timeout", "connection", "rate_limited", "server_error", "rejected", "auth")


class TransportError(XrpcError):
    """The request did not get an HTTP answer (connect error, reset, timeout)."""

    def __init__(self, method: str, error: str, message: str = "") -> None:
        super().__init__(method, 0, error, message)


class RateLimitedError(XrpcError):
    """HTTP 429. ``retry_after`` is how long to wait, from the headers."""

    def __init__(
        self,
        method: str,
        message: str,
        *,
        retry_after: float,
        remaining: int | None,
        limit: int | None,
        policy: str | None,
    ) -> None:
        super().__init__(method, 429, "RateLimitExceeded", message)
        self.retry_after = retry_after
        self.remaining = remaining
        self.limit = limit
        self.policy = policy


class AuthError(XrpcError):
    """The session is not (or no longer) valid: expired or revoked token, bad password."""

    @property
    def reason(self) -> str:
        return "auth"

    @property
    def expired(self) -> bool:
        return self.error in ("ExpiredToken", "InvalidToken")


class AccountUnavailableError(XrpcError):
    """The account cannot write: deactivated, taken down, or its credentials are wrong."""
