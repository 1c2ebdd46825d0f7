"""The CID a PDS assigns to an uploaded blob, computed locally.

A blob CID is CIDv1 with the ``raw`` codec (0x55) over a sha2-256 multihash,
written in base32-lower multibase (``b...``). The ``atproto`` SDK has a CID
*type* but no helper that hashes bytes into one; its dependency ``libipld``
(maintained by the same project) encodes binary CIDs to strings, so we build
the few header bytes ourselves and let ``libipld`` do the multibase encoding.
"""

from __future__ import annotations

import hashlib

import libipld

CID_V1 = 0x01
RAW_CODEC = 0x55
SHA2_256 = 0x12
SHA2_256_LENGTH = 0x20
_PREFIX = bytes((CID_V1, RAW_CODEC, SHA2_256, SHA2_256_LENGTH))


def blob_cid_bytes(data: bytes) -> bytes:
    """Binary CIDv1 (raw, sha2-256) of ``data``."""
    return _PREFIX + hashlib.sha256(data).digest()


def blob_cid(data: bytes) -> str:
    """String CID (``bafkrei...``) the PDS returns from ``uploadBlob`` for ``data``."""
    return str(libipld.encode_cid(blob_cid_bytes(data)))


def cid_from_sha256(digest: bytes) -> str:
    """The blob CID of data whose sha2-256 is ``digest`` (computed while streaming: the
    bytes need never be in memory at once)."""
    if len(digest) != SHA2_256_LENGTH:
        raise ValueError(f"a sha2-256 digest is 32 bytes, got {len(digest)}")
    return str(libipld.encode_cid(_PREFIX + digest))
