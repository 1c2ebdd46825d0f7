"""The painting image path: storage URLs -> safe fetch -> boxed thumbnail -> blob CID.

See ``docs/images.md``. The daemon calls :func:`prepare_painting_blob`.

The names below are loaded on first use: an image worker process imports
``syncd.images.workerproc`` and ``syncd.images.render`` only, not httpx and the
rest of the fetch side.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_WHERE = {
    "blob_cid": "cid",
    "DisallowedHostError": "errors",
    "ImageError": "errors",
    "ImageHTTPError": "errors",
    "ImageNotFoundError": "errors",
    "ImageTooLargeError": "errors",
    "ImageWorkerError": "errors",
    "InvalidPaintingError": "errors",
    "NotAnImageError": "errors",
    "ThumbnailError": "errors",
    "TooManyRedirectsError": "errors",
    "TransientImageError": "errors",
    "UnsafeSlugError": "errors",
    "ImageFetcher": "fetch",
    "make_client": "fetch",
    "PreparedImage": "pipeline",
    "prepare_painting_blob": "pipeline",
    "Thumbnail": "render",
    "make_thumbnail": "render",
    "ImageSettings": "settings",
    "StructureLimits": "structure",
    "inspect_image": "structure",
    "is_platform_thumbnail": "structure",
    "ThumbnailPool": "thumbnail",
    "PaintingSource": "urls",
    "painting_source": "urls",
    "painting_source_from_doc": "urls",
}

__all__ = [
    "DisallowedHostError",
    "ImageError",
    "ImageFetcher",
    "ImageHTTPError",
    "ImageNotFoundError",
    "ImageSettings",
    "ImageTooLargeError",
    "ImageWorkerError",
    "InvalidPaintingError",
    "NotAnImageError",
    "PaintingSource",
    "PreparedImage",
    "StructureLimits",
    "Thumbnail",
    "ThumbnailError",
    "ThumbnailPool",
    "TooManyRedirectsError",
    "TransientImageError",
    "UnsafeSlugError",
    "blob_cid",
    "inspect_image",
    "is_platform_thumbnail",
    "make_client",
    "make_thumbnail",
    "painting_source",
    "painting_source_from_doc",
    "prepare_painting_blob",
]

if TYPE_CHECKING:
    from syncd.images.cid import blob_cid
    from syncd.images.errors import (
        DisallowedHostError,
        ImageError,
        ImageHTTPError,
        ImageNotFoundError,
        ImageTooLargeError,
        ImageWorkerError,
        InvalidPaintingError,
        NotAnImageError,
        ThumbnailError,
        TooManyRedirectsError,
        TransientImageError,
        UnsafeSlugError,
    )
    from syncd.images.fetch import ImageFetcher, make_client
    from syncd.images.pipeline import PreparedImage, prepare_painting_blob
    from syncd.images.render import Thumbnail, make_thumbnail
    from syncd.images.settings import ImageSettings
    from syncd.images.structure import StructureLimits, inspect_image, is_platform_thumbnail
    from syncd.images.thumbnail import ThumbnailPool
    from syncd.images.urls import PaintingSource, painting_source, painting_source_from_doc


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'syncd.images' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"syncd.images.{module}"), name)
    globals()[name] = value
    return value
