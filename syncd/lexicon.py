"""Validate records against the lexicon files in ``lexicons/`` before they are sent.

The PDS accepts unknown NSIDs without validating them (``validationStatus:
"unknown"``), so this is where a record that breaks its lexicon is caught. It
implements the parts of the lexicon language the record types use: objects with
required properties (open: fields a lexicon does not list are allowed, as the
lexicon language says), strings (length in UTF-8 bytes, graphemes,
``datetime``/``uri`` formats), integers, booleans and blobs (``accept``,
``maxSize``). The files are the lexicons the platform *publishes*
(``platform-facts.md`` §3), not a stricter copy: a record syncd writes is
valid exactly when the platform's clients would take it.
"""

from __future__ import annotations

import json
import re
import sys
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any

_DATETIME_RE = re.compile(
    r"^[0-9]{4}-[01][0-9]-[0-3][0-9]T[0-2][0-9]:[0-6][0-9]:[0-6][0-9](\.[0-9]{1,20})?(Z|[+-][0-2][0-9]:[0-5][0-9])$"
)
_URI_RE = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:[^\s]+$")


class LexiconError(ValueError):
    """A record does not match its lexicon. ``path`` names the offending field."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path


@dataclass(frozen=True)
class Lexicon:
    nsid: str
    record: Mapping[str, Any]
    key: str


def lexicon_dirs() -> list[Path]:
    here = Path(__file__).resolve().parent
    return [here.parent / "lexicons", Path(sys.prefix) / "share" / "syncd" / "lexicons"]


@cache
def load(nsid: str) -> Lexicon:
    for directory in lexicon_dirs():
        path = directory / f"{nsid}.json"
        if path.is_file():
            doc = json.loads(path.read_text())
            main = doc["defs"]["main"]
            return Lexicon(nsid=doc["id"], record=main["record"], key=main.get("key", "any"))
    raise FileNotFoundError(f"no lexicon file for {nsid} in {[str(d) for d in lexicon_dirs()]}")


def _graphemes(value: str) -> int:
    # An approximation of extended grapheme clusters: combining marks and
    # zero-width joiner sequences do not start a new cluster.
    count = 0
    prev_zwj = False
    for ch in value:
        if unicodedata.combining(ch) or ch in "\u200d\ufe0f" or prev_zwj:
            prev_zwj = ch == "\u200d"
            continue
        count += 1
    return count


def _check_string(path: str, schema: Mapping[str, Any], value: Any) -> None:
    if not isinstance(value, str):
        raise LexiconError(path, f"expected a string, got {type(value).__name__}")
    try:
        encoded = value.encode("utf-8")
    except UnicodeEncodeError:
        # How syncd's MongoDB client decodes invalid UTF-8 in the source (surrogateescape).
        raise LexiconError(path, "not valid UTF-8 in the source document") from None
    if "maxLength" in schema and len(encoded) > schema["maxLength"]:
        raise LexiconError(path, f"longer than {schema['maxLength']} bytes ({len(encoded)})")
    if "minLength" in schema and len(encoded) < schema["minLength"]:
        raise LexiconError(path, f"shorter than {schema['minLength']} bytes")
    if "maxGraphemes" in schema and _graphemes(value) > schema["maxGraphemes"]:
        raise LexiconError(path, f"more than {schema['maxGraphemes']} graphemes")
    fmt = schema.get("format")
    if fmt == "datetime":
        if not _DATETIME_RE.match(value):
            raise LexiconError(path, f"not an RFC 3339 datetime: {value[:40]!r}")
        try:
            datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise LexiconError(path, f"not a valid datetime: {value[:40]!r}") from None
    elif fmt == "uri" and not _URI_RE.match(value):
        raise LexiconError(path, f"not a URI: {value[:60]!r}")


def _check_blob(path: str, schema: Mapping[str, Any], value: Any) -> None:
    if not isinstance(value, Mapping) or value.get("$type") != "blob":
        raise LexiconError(path, "expected a blob")
    mime = value.get("mimeType")
    size = value.get("size")
    ref = value.get("ref")
    if not isinstance(ref, Mapping) or not isinstance(ref.get("$link"), str):
        raise LexiconError(path, "blob without ref.$link")
    accept = schema.get("accept")
    if accept and mime not in accept:
        raise LexiconError(path, f"mime type {mime!r} not in {accept}")
    if not isinstance(size, int) or size < 0:
        raise LexiconError(path, "blob without a size")
    if "maxSize" in schema and size > schema["maxSize"]:
        raise LexiconError(path, f"blob of {size} bytes exceeds maxSize {schema['maxSize']}")


def _check(path: str, schema: Mapping[str, Any], value: Any) -> None:
    kind = schema.get("type")
    if kind == "object":
        if not isinstance(value, Mapping):
            raise LexiconError(path, "expected an object")
        props: Mapping[str, Any] = schema.get("properties", {})
        for name in schema.get("required", []):
            if value.get(name) is None:
                raise LexiconError(f"{path}.{name}", "required")
        for name, item in value.items():
            if name == "$type" or name not in props:
                # Lexicon objects are open: a field the lexicon does not list is allowed
                # (the platform itself writes `acUrl` on paintings and kidlisp records).
                continue
            if item is None and name in schema.get("nullable", []):
                continue
            _check(f"{path}.{name}", props[name], item)
    elif kind == "string":
        _check_string(path, schema, value)
    elif kind == "integer":
        if isinstance(value, bool) or not isinstance(value, int):
            raise LexiconError(path, "expected an integer")
    elif kind == "boolean":
        if not isinstance(value, bool):
            raise LexiconError(path, "expected a boolean")
    elif kind == "blob":
        _check_blob(path, schema, value)
    else:
        raise LexiconError(path, f"unsupported lexicon type {kind!r}")


def validate(nsid: str, record: Mapping[str, Any]) -> None:
    """Raise :class:`LexiconError` unless ``record`` is valid for ``nsid``."""
    lex = load(nsid)
    if record.get("$type") != nsid:
        raise LexiconError("$type", f"expected {nsid!r}, got {record.get('$type')!r}")
    _check("record", lex.record, record)
