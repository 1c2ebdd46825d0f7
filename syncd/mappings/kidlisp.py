"""kidlisp → computer.aesthetic.kidlisp: code, source, acUrl (``/$code``), when, ref."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from syncd.mappings.base import CollectionMapping, MappingContext, ref_of, rfc3339, text, when_of


class Kidlisp(CollectionMapping):
    collection = "kidlisp"
    nsid = "computer.aesthetic.kidlisp"

    def fields(self, doc: Mapping[str, Any], ctx: MappingContext) -> dict[str, Any]:
        code = text(doc, "code")
        assert code is not None
        return {
            "code": code,
            "source": text(doc, "source"),
            # As the platform writes it: the code as it is (a code no URI can hold makes
            # the record invalid, and the document a dead letter, not a rewritten URL).
            "acUrl": f"{ctx.public_base_url}/${code}",
            "when": rfc3339(when_of(doc)),
            "ref": ref_of(doc),
        }
