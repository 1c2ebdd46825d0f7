"""Error classes for the painting image path.

Every error carries a short machine-readable ``reason`` (for metrics, logs and
the daemon's dead-letter bookkeeping) and ``permanent``: ``True`` means retrying
the same input can never succeed (skip the document and record why), ``False``
means the caller should retry later with backoff.
"""

from __future__ import annotations

from typing import Any


class ImageError(Exception):
    """Base class for everything this package raises on bad input or I/O failure."""

    reason: str = "image_error"
    permanent: bool = True

    def __init__(
        self,
        message: str,
        *,
        reason: str | None = None,
        url: str | None = None,
        status: int | None = None,
    ) -> None:
        super().__init__(message)
        if reason is not None:
            self.reason = reason
        self.url = url
        self.status = status

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else ""

    def __reduce__(self) -> tuple[Any, ...]:
        # Keep reason/url/status across pickling (process pools, logging queues).
        return (
            _rebuild,
            (type(self), self.message, self.reason, self.url, self.status),
        )


def _rebuild(
    cls: type[ImageError], message: str, reason: str, url: str | None, status: int | None
) -> ImageError:
    return cls(message, reason=reason, url=url, status=status)


class InvalidPaintingError(ImageError):
    """The painting document cannot be turned into a storage URL (bad user/bucket)."""

    reason = "invalid_painting"


class UnsafeSlugError(InvalidPaintingError):
    """The slug is empty or could escape its key (``..``, leading ``/``, ``\\``, ``?``, ...)."""

    reason = "unsafe_slug"


class DisallowedHostError(ImageError):
    """A URL (or a redirect target) points at a host outside ``allowed_hosts``."""

    reason = "disallowed_host"


class TooManyRedirectsError(ImageError):
    reason = "too_many_redirects"


class ImageTooLargeError(ImageError):
    """The response body is larger than the configured download limit."""

    reason = "image_too_large"


class ImageNotFoundError(ImageError):
    """404/410 from object storage: the image does not exist."""

    reason = "image_not_found"


class ImageHTTPError(ImageError):
    """Any other 4xx: the request itself is wrong; retrying will not help."""

    reason = "image_http_4xx"


class NotAnImageError(ImageError):
    """The body is not a PNG/JPEG/GIF/WebP that Pillow can identify."""

    reason = "not_an_image"


class TransientImageError(ImageError):
    """5xx, 408/429, timeouts, connection errors: retry later with backoff.

    ``retry_after`` is the server's ``Retry-After`` hint in seconds, if any.
    """

    reason = "image_transient"
    permanent = False

    def __init__(
        self,
        message: str,
        *,
        reason: str | None = None,
        url: str | None = None,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, reason=reason, url=url, status=status)
        self.retry_after = retry_after


class ThumbnailError(ImageError):
    """The image could not be made into a conforming thumbnail (deterministic)."""

    reason = "thumbnail_failed"


class ImageWorkerError(ImageError):
    """A worker process overran its box making this image's thumbnail and was killed
    (``image_memory_limit``, ``image_cpu_limit``) or died (``image_worker_crashed``,
    after a second try on a fresh worker). Deterministic for the image: permanent."""

    reason = "image_worker_crashed"
