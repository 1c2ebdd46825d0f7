"""The painting image path: storage URL -> safe fetch -> thumbnail -> blob CID.

See ``docs/images.md``. The daemon calls :func:`prepare_painting_blob`.
"""

from syncd.images.cid import blob_cid
from syncd.images.errors import (
    DisallowedHostError,
    ImageError,
    ImageHTTPError,
    ImageNotFoundError,
    ImageTooLargeError,
    InvalidPaintingError,
    NotAnImageError,
    ThumbnailError,
    TooManyRedirectsError,
    TransientImageError,
    UnsafeSlugError,
)
from syncd.images.fetch import ImageFetcher, make_client
from syncd.images.pipeline import PreparedImage, prepare_painting_blob
from syncd.images.settings import ImageSettings
from syncd.images.thumbnail import Thumbnail, ThumbnailPool, make_thumbnail
from syncd.images.urls import PaintingSource, painting_source, painting_source_from_doc

__all__ = [
    "DisallowedHostError",
    "ImageError",
    "ImageFetcher",
    "ImageHTTPError",
    "ImageNotFoundError",
    "ImageSettings",
    "ImageTooLargeError",
    "InvalidPaintingError",
    "NotAnImageError",
    "PaintingSource",
    "PreparedImage",
    "Thumbnail",
    "ThumbnailError",
    "ThumbnailPool",
    "TooManyRedirectsError",
    "TransientImageError",
    "UnsafeSlugError",
    "blob_cid",
    "make_client",
    "make_thumbnail",
    "painting_source",
    "painting_source_from_doc",
    "prepare_painting_blob",
]
