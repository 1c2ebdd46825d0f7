"""MongoDB wire-protocol framing (OP_MSG, legacy OP_QUERY/OP_REPLY) for the sandbox.

Dev/test only: this is the framing layer of the MongoDB replica-set *sandbox*, a fake
server for tests and demos. It is never a production option.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any

import bson
from bson.codec_options import CodecOptions, DatetimeConversion

OP_REPLY = 1
OP_QUERY = 2004
OP_COMPRESSED = 2012
OP_MSG = 2013

# OP_MSG flag bits
FLAG_CHECKSUM_PRESENT = 1
FLAG_MORE_TO_COME = 1 << 1
FLAG_EXHAUST_ALLOWED = 1 << 16

HEADER = struct.Struct("<iiii")
_INT32 = struct.Struct("<i")
_UINT32 = struct.Struct("<I")

#: Documents are decoded as plain dicts with naive UTC datetimes (what mongomock stores).
#: Dates outside Python's range decode as ``DatetimeMS`` instead of failing.
DECODE_OPTIONS: CodecOptions[dict[str, Any]] = CodecOptions(
    document_class=dict, tz_aware=False, datetime_conversion=DatetimeConversion.DATETIME_AUTO
)

MAX_MESSAGE_SIZE = 48_000_000


class ProtocolError(Exception):
    """The peer sent bytes that are not a message we understand; the connection is closed."""


@dataclass
class Request:
    """One decoded client request."""

    request_id: int
    op_code: int
    command: dict[str, Any]
    db: str
    more_to_come: bool = False
    exhaust_allowed: bool = False
    #: Raw bytes of each document of each kind-1 section (keyed by identifier), in order.
    raw_sequences: dict[str, list[bytes]] = field(default_factory=dict)
    #: Set while the command runs: it wrote something (for ``NoWritesPerformed``) ...
    wrote: bool = False
    #: ... and it is known to belong to a change stream (an ``aggregate`` with
    #: ``$changeStream``, or a ``getMore`` once its change-stream cursor is checked out).
    change_stream: bool = False

    @property
    def name(self) -> str:
        return next(iter(self.command), "")


def _split_bson_sequence(data: bytes, pos: int, end: int) -> list[bytes]:
    docs: list[bytes] = []
    while pos < end:
        (size,) = _INT32.unpack_from(data, pos)
        if size < 5 or pos + size > end:
            raise ProtocolError("bad BSON document size in document sequence")
        docs.append(data[pos : pos + size])
        pos += size
    return docs


def parse_op_msg(request_id: int, body: bytes) -> Request:
    """Parse the part of an OP_MSG that follows the 16-byte header."""
    (flags,) = _UINT32.unpack_from(body, 0)
    end = len(body)
    if flags & FLAG_CHECKSUM_PRESENT:
        end -= 4
    pos = 4
    command: dict[str, Any] | None = None
    sequences: dict[str, list[bytes]] = {}
    while pos < end:
        kind = body[pos]
        pos += 1
        if kind == 0:
            (size,) = _INT32.unpack_from(body, pos)
            command = bson.decode(body[pos : pos + size], DECODE_OPTIONS)
            pos += size
        elif kind == 1:
            (size,) = _INT32.unpack_from(body, pos)
            section_end = pos + size
            name_end = body.index(b"\x00", pos + 4, section_end)
            ident = body[pos + 4 : name_end].decode()
            sequences[ident] = _split_bson_sequence(body, name_end + 1, section_end)
            pos = section_end
        else:
            raise ProtocolError(f"unknown OP_MSG section kind {kind}")
    if command is None:
        raise ProtocolError("OP_MSG without a body section")
    for ident, raws in sequences.items():
        command[ident] = [bson.decode(raw, DECODE_OPTIONS) for raw in raws]
    db = command.get("$db", "admin")
    return Request(
        request_id=request_id,
        op_code=OP_MSG,
        command=command,
        db=db if isinstance(db, str) else "admin",
        more_to_come=bool(flags & FLAG_MORE_TO_COME),
        exhaust_allowed=bool(flags & FLAG_EXHAUST_ALLOWED),
        raw_sequences=sequences,
    )


def parse_op_query(request_id: int, body: bytes) -> Request:
    """Parse a legacy OP_QUERY (only ``<db>.$cmd`` commands, as used by the handshake)."""
    pos = 4  # flags
    name_end = body.index(b"\x00", pos)
    full_name = body[pos:name_end].decode()
    pos = name_end + 1 + 8  # skip numberToSkip, numberToReturn
    (size,) = _INT32.unpack_from(body, pos)
    query = bson.decode(body[pos : pos + size], DECODE_OPTIONS)
    if "$query" in query:
        query = query["$query"]
    db, _, coll = full_name.partition(".")
    if coll != "$cmd":
        raise ProtocolError(f"legacy OP_QUERY on {full_name!r} is not supported")
    return Request(request_id=request_id, op_code=OP_QUERY, command=query, db=db)


def parse_message(header: tuple[int, int, int, int], body: bytes) -> Request:
    """Decode one message; ``header`` is (length, requestID, responseTo, opCode)."""
    _length, request_id, _response_to, op_code = header
    if op_code == OP_MSG:
        return parse_op_msg(request_id, body)
    if op_code == OP_QUERY:
        return parse_op_query(request_id, body)
    raise ProtocolError(f"unsupported opCode {op_code}")


def bad_request(header: tuple[int, int, int, int], exc: Exception) -> Request:
    """A stand-in request whose command fails: the message could not be decoded."""
    _length, request_id, _response_to, op_code = header
    return Request(
        request_id=request_id,
        op_code=op_code,
        command={"$sandboxInvalidMessage": f"{type(exc).__name__}: {exc}"},
        db="admin",
    )


def encode_op_msg(request_id: int, response_to: int, doc: Any, more_to_come: bool = False) -> bytes:
    """Encode a reply (a dict, or already-encoded BSON bytes) as an OP_MSG."""
    payload = doc if isinstance(doc, bytes) else bson.encode(doc)
    flags = FLAG_MORE_TO_COME if more_to_come else 0
    length = 16 + 4 + 1 + len(payload)
    return b"".join(
        (
            HEADER.pack(length, request_id, response_to, OP_MSG),
            _UINT32.pack(flags),
            b"\x00",
            payload,
        )
    )


def encode_op_reply(request_id: int, response_to: int, doc: Any) -> bytes:
    """Encode a legacy OP_REPLY carrying one document."""
    payload = doc if isinstance(doc, bytes) else bson.encode(doc)
    length = 16 + 20 + len(payload)
    return b"".join(
        (
            HEADER.pack(length, request_id, response_to, OP_REPLY),
            struct.pack("<iqii", 0, 0, 0, 1),
            payload,
        )
    )


def encode_reply(request: Request, request_id: int, doc: Any) -> bytes:
    """Encode ``doc`` as the reply to ``request`` in the request's own protocol."""
    if request.op_code == OP_QUERY:
        return encode_op_reply(request_id, request.request_id, doc)
    return encode_op_msg(request_id, request.request_id, doc)
