from typing import Any

import pytest

from syncd import lexicon
from syncd.lexicon import LexiconError

WHEN = "2024-02-03T04:05:06.789Z"


def painting(**over: Any) -> dict[str, Any]:
    rec: dict[str, Any] = {
        "$type": "computer.aesthetic.painting",
        "slug": "2024.2.3.4.5.6.789",
        "code": "abc",
        "imageUrl": "https://aesthetic.computer/media/paintings/abc",
        "acUrl": "https://aesthetic.computer/#abc",
        "when": WHEN,
        "ref": "65a1b2c3d4e5f60718293a4b",
        "thumbnail": {
            "$type": "blob",
            "ref": {"$link": "bafkrei"},
            "mimeType": "image/png",
            "size": 1000,
        },
    }
    rec.update(over)
    return rec


def test_valid_records_pass() -> None:
    lexicon.validate("computer.aesthetic.painting", painting())
    lexicon.validate(
        "computer.aesthetic.mood",
        {"$type": "computer.aesthetic.mood", "mood": "ok", "when": WHEN, "ref": "x"},
    )


@pytest.mark.parametrize(
    ("over", "path"),
    [
        ({"slug": "x" * 129}, "record.slug"),
        ({"code": "abcdefghijk"}, "record.code"),
        ({"when": "yesterday"}, "record.when"),
        ({"when": "2024-13-45T00:00:00Z"}, "record.when"),
        ({"imageUrl": "not a uri"}, "record.imageUrl"),
        (
            {
                "thumbnail": {
                    "$type": "blob",
                    "ref": {"$link": "b"},
                    "mimeType": "image/png",
                    "size": 1_048_577,
                }
            },
            "record.thumbnail",
        ),
        (
            {
                "thumbnail": {
                    "$type": "blob",
                    "ref": {"$link": "b"},
                    "mimeType": "image/gif",
                    "size": 10,
                }
            },
            "record.thumbnail",
        ),
        ({"thumbnail": None}, "record.thumbnail"),
        ({"slug": "lone \udc80 surrogate"}, "record.slug"),
        ({"ref": 12}, "record.ref"),
    ],
)
def test_invalid_records_name_the_field(over: dict[str, Any], path: str) -> None:
    with pytest.raises(LexiconError) as info:
        lexicon.validate("computer.aesthetic.painting", painting(**over))
    assert info.value.path == path


def test_wrong_type_is_rejected() -> None:
    with pytest.raises(LexiconError):
        lexicon.validate(
            "computer.aesthetic.painting", painting(**{"$type": "computer.aesthetic.mood"})
        )


def test_published_painting_lexicon_takes_what_the_platform_writes() -> None:
    # `thumbnail` is optional (a painting whose image is missing), a 1 MB blob fits, and
    # `acUrl` -- which the platform writes though the lexicon does not list it -- is allowed.
    without = painting()
    del without["thumbnail"]
    lexicon.validate("computer.aesthetic.painting", without)
    big = {"$type": "blob", "ref": {"$link": "b"}, "mimeType": "image/png", "size": 1_048_576}
    lexicon.validate("computer.aesthetic.painting", painting(thumbnail=big, slug="s" * 128))


def test_mood_limit_is_the_published_one() -> None:
    # No grapheme limit: 3,000 characters (and 2,500 two-byte ones) are fine...
    for text in ("m" * 3000, "é" * 2500):
        rec = {"$type": "computer.aesthetic.mood", "mood": text, "when": WHEN, "ref": "x"}
        lexicon.validate("computer.aesthetic.mood", rec)
    # ...and the reason for a longer one names the field and the limit.
    rec = {"$type": "computer.aesthetic.mood", "mood": "m" * 5001, "when": WHEN, "ref": "x"}
    with pytest.raises(LexiconError, match="5000") as info:
        lexicon.validate("computer.aesthetic.mood", rec)
    assert info.value.path == "record.mood"


@pytest.mark.parametrize(
    ("nsid", "field", "limit"),
    [
        ("computer.aesthetic.painting", "slug", 128),
        ("computer.aesthetic.painting", "code", 10),
        ("computer.aesthetic.piece", "slug", 100),
        ("computer.aesthetic.kidlisp", "source", 50_000),
        ("computer.aesthetic.kidlisp", "code", 10),
        ("computer.aesthetic.mood", "mood", 5000),
    ],
)
def test_published_limits(nsid: str, field: str, limit: int) -> None:
    lex = lexicon.load(nsid)
    assert lex.record["properties"][field]["maxLength"] == limit


def test_every_lexicon_file_loads() -> None:
    for nsid in ("painting", "mood", "piece", "kidlisp"):
        lex = lexicon.load(f"computer.aesthetic.{nsid}")
        assert lex.key == "tid"
        assert "when" in lex.record["required"] and "ref" in lex.record["required"]


def test_a_real_replacement_character_is_text_like_any_other() -> None:
    # Only invalid UTF-8 in the source (decoded as lone surrogates) is refused.
    lexicon.validate("computer.aesthetic.painting", painting(slug="who typed \ufffd?"))
    with pytest.raises(LexiconError, match="not valid UTF-8"):
        lexicon.validate("computer.aesthetic.painting", painting(slug="bad \udcff bytes"))
