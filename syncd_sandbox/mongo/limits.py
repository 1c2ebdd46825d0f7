"""BSON size limits of a real server, as the MongoDB sandbox enforces them (dev/test only).

``BSONObjMaxUserSize`` bounds what a user may store (a document after insert, update or
replace); ``BSONObjMaxInternalSize`` (16 KiB more) bounds what the server itself may
build and send, such as one change event; ``$changeStreamSplitLargeEvent`` splits events
above ``BSONObjMaxInternalSize - 8 KiB``.
"""

from __future__ import annotations

#: BSONObjMaxUserSize: 16 MiB.
MAX_USER_SIZE = 16 * 1024 * 1024
#: BSONObjMaxInternalSize: 16 MiB + 16 KiB (16 793 600).
MAX_INTERNAL_SIZE = MAX_USER_SIZE + 16 * 1024
#: kBSONObjMaxChangeEventSize: events larger than this are split by
#: ``$changeStreamSplitLargeEvent``.
MAX_CHANGE_EVENT_SIZE = MAX_INTERNAL_SIZE - 8 * 1024


def insert_too_large(size: int) -> str:
    return f"object to insert too large. size in bytes: {size}, max size: {MAX_USER_SIZE}"


UPDATE_TOO_LARGE = f"Resulting document after update is larger than {MAX_USER_SIZE}"
UPSERT_TOO_LARGE = f"Document to upsert is larger than {MAX_USER_SIZE}"
