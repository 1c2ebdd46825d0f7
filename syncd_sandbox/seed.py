"""Source documents as the platform stores them, and the ``demo`` data set.

Generators (``make_painting``, ``make_mood``, ``make_piece``, ``make_kidlisp``)
return documents with the real field names (moods keep their text in ``mood``;
``when`` is a timezone-aware UTC datetime, stored by pymongo as a BSON date;
guest content has no ``user`` field). ``png_bytes``/``pixel_art_png_bytes``/
``write_png`` make real PNGs and ``write_painting_files`` puts a painting's image
(and recording zip) where the platform stores it (platform-facts.md §1:
``{sub}/painting/{slug}.png`` by default, ``layout="old"`` for the oldest
``{sub}/{slug}.png`` objects; see :mod:`syncd_sandbox.images`).

``demo_dataset`` builds a small realistic world: users with and without
ATProto accounts, guest content, pixel art next to large paintings, a WIP
painting, a painting whose image is missing, one at the oldest key, one with a
prefixed slug, every kind of non-public document (``nuked``, ``deleted`` moods,
``status: "wip"``, ``private``, ``draft``, ``hidden``, ``visibility:
"unlisted"``) and two legacy moods whose records carry ``mongoId`` (created on
the PDS by :func:`create_legacy_records`).
"""

from __future__ import annotations

import hashlib
import io
import random
import string
import struct
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bson import ObjectId
from PIL import Image, ImageDraw

from syncd_sandbox import platform, tokens
from syncd_sandbox.images import StoredObject, key_path, painting_keys, tape_object, write_file

COLLECTIONS = platform.COLLECTIONS
GUEST_USER_ID = platform.GUEST_USER_ID
SEEDS = ("demo", "empty")

Document = dict[str, Any]

_CODE_ALPHABET = string.ascii_letters + string.digits


def new_sub(provider: str = "auth0") -> str:
    """An identity-provider subject like ``auth0|63effeeb2a7d55f8098d62f9``."""
    return f"{provider}|{tokens.token_hex(12)}"


def short_code(rng: random.Random | None = None, length: int = 5) -> str:
    """A painting / kidlisp short code (the lexicon allows at most 10 characters)."""
    r = rng or random.Random()
    return "".join(r.choice(_CODE_ALPHABET) for _ in range(length))


def when_ms(dt: datetime | None = None) -> datetime:
    """A UTC datetime truncated to milliseconds (what a BSON date keeps)."""
    dt = dt or datetime.now(UTC)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC).replace(microsecond=dt.microsecond // 1000 * 1000)


def _doc(user: str | None, when: datetime | None, extra: Mapping[str, Any]) -> Document:
    doc: Document = {"_id": ObjectId()}
    if user is not None:
        doc["user"] = user
    doc["when"] = when_ms(when)
    doc.update(extra)
    return doc


def make_painting(
    user: str | None,
    slug: str | None = None,
    code: str | None = None,
    when: datetime | None = None,
    **extra: Any,
) -> Document:
    """A ``paintings`` document: ``slug``, ``code``, ``when``, ``user`` (absent for guests)."""
    doc = _doc(user, when, {})
    doc["slug"] = slug or datetime.now(UTC).strftime("%Y.%m.%d.%H.%M.%S.") + tokens.token_hex(2)
    doc["code"] = code or short_code()
    doc.update(extra)
    return doc


def make_mood(user: str, mood: str, when: datetime | None = None, **extra: Any) -> Document:
    """A ``moods`` document: the text is in ``mood`` (not ``text``); ``user`` is always set."""
    return _doc(user, when, {"mood": mood, **extra})


def make_piece(
    user: str | None,
    slug: str,
    when: datetime | None = None,
    *,
    code: str | None = None,
    source: str | None = None,
    **extra: Any,
) -> Document:
    """A ``pieces`` document: ``slug``, ``when``; some carry ``code`` and ``source``."""
    fields: Document = {"slug": slug}
    if code is not None:
        fields["code"] = code
    if source is not None:
        fields["source"] = source
    return _doc(user, when, {**fields, **extra})


def make_kidlisp(
    user: str | None,
    code: str | None = None,
    source: str = "(wipe blue)",
    when: datetime | None = None,
    **extra: Any,
) -> Document:
    """A ``kidlisp`` document: ``code``, ``source``, ``when`` (no ``user`` for guests)."""
    return _doc(user, when, {"code": code or short_code(), "source": source, **extra})


def make_tape(
    user: str | None,
    slug: str | None = None,
    code: str | None = None,
    when: datetime | None = None,
    *,
    mp4: str | None = None,
    mp4_status: str = "complete",
    **extra: Any,
) -> Document:
    """A ``tapes`` document (platform-facts §7): ``code``, ``slug`` (``wand-<ms>``),
    ``when``, ``user`` (absent for guests), ``mp4Status`` and, once converted, ``mp4``
    (the MP4's full URL)."""
    doc = _doc(user, when, {})
    doc["slug"] = slug or f"tape-{int(doc['when'].timestamp() * 1000)}"
    doc["code"] = code or short_code()
    doc["mp4Status"] = mp4_status
    if mp4 is not None:
        doc["mp4"] = mp4
    doc.update(extra)
    return doc


_MP4_CHUNK = 1 << 20


def _box(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", 8 + len(payload)) + kind + payload


def mp4_header(size: int, brand: bytes = b"isom") -> bytes:
    """An ISO base media header: ``ftyp`` (``brand``; the PDS reads ``isom`` as
    video/mp4), a minimal ``moov``/``mvhd``, and an ``mdat`` box header whose payload
    makes the whole file ``size`` bytes."""
    ftyp = _box(b"ftyp", brand + struct.pack(">I", 0x200) + b"isomiso2avc1mp41")
    mvhd = _box(b"mvhd", bytes(4) + struct.pack(">IIII", 0, 0, 1000, 1000) + bytes(80))
    head = ftyp + _box(b"moov", mvhd)
    payload = size - len(head) - 8
    if payload < 0:
        raise ValueError(f"an MP4 is at least {len(head) + 8} bytes")
    return head + struct.pack(">I", 8 + payload) + b"mdat"


def mp4_chunks(size: int, seed: int = 0, brand: bytes = b"isom") -> Iterator[bytes]:
    """A deterministic MP4 of exactly ``size`` bytes, a megabyte at a time (a 30 MB test
    video is never built in memory): :func:`mp4_header` then pseudo-random media data."""
    head = mp4_header(size, brand)
    yield head
    rng = random.Random(seed)
    left = size - len(head)
    while left > 0:
        n = min(_MP4_CHUNK, left)
        yield rng.randbytes(n)
        left -= n


def mp4_bytes(size: int = 4096, seed: int = 0, brand: bytes = b"isom") -> bytes:
    """A small MP4 in memory (see :func:`mp4_chunks`)."""
    return b"".join(mp4_chunks(size, seed, brand))


@dataclass(frozen=True)
class Mp4File:
    path: Path
    size: int
    sha256: str


def write_mp4(path: str | Path, size: int, seed: int = 0, brand: bytes = b"isom") -> Mp4File:
    """Write an MP4 of ``size`` bytes to ``path`` (parents created), streamed."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    tmp = p.with_name(f".{p.name}.tmp")
    with tmp.open("wb") as fh:
        for chunk in mp4_chunks(size, seed, brand):
            digest.update(chunk)
            fh.write(chunk)
    tmp.replace(p)
    return Mp4File(p, size, digest.hexdigest())


def png_bytes(width: int = 64, height: int = 64, seed: int = 0) -> bytes:
    """A real, deterministic PNG of the given size (a few shapes on a coloured ground)."""
    rng = random.Random(seed)
    img = Image.new("RGB", (width, height), tuple(rng.randrange(256) for _ in range(3)))
    draw = ImageDraw.Draw(img)
    for _ in range(6):
        x0, y0 = rng.randrange(width), rng.randrange(height)
        x1, y1 = x0 + rng.randrange(1, width // 2 + 2), y0 + rng.randrange(1, height // 2 + 2)
        draw.ellipse((x0, y0, x1, y1), fill=tuple(rng.randrange(256) for _ in range(3)))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def pixel_art_png_bytes(
    width: int = 32, height: int = 32, seed: int = 0, colours: int = 6
) -> bytes:
    """Pixel art: every pixel one of a few colours at random (a crisp thumbnail shows each)."""
    rng = random.Random(seed)
    palette = [tuple(rng.randrange(256) for _ in range(3)) for _ in range(colours)]
    img = Image.new("RGB", (width, height))
    img.putdata([rng.choice(palette) for _ in range(width * height)])
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def noisy_png_bytes(width: int, height: int, seed: int = 0) -> bytes:
    """A PNG that compresses badly (random pixels): big files for size-limit tests."""
    rng = random.Random(seed)
    img = Image.frombytes("RGB", (width, height), rng.randbytes(width * height * 3))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def write_png(path: str | Path, width: int = 64, height: int = 64, seed: int = 0) -> bytes:
    """Write a PNG file (parents created); returns its bytes."""
    data = png_bytes(width, height, seed)
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)
    return data


def recording_zip_bytes(frames: int = 3, seed: int = 0) -> bytes:
    """A small zip like a painting recording (a few PNG frames and a timeline)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for i in range(frames):
            zf.writestr(f"frame-{i:04d}.png", png_bytes(32, 32, seed + i))
        zf.writestr("timeline.json", f'{{"frames": {frames}}}')
    return buf.getvalue()


@dataclass(frozen=True)
class PaintingFiles:
    bucket: str
    image_key: str
    recording_key: str
    image_path: Path
    recording_path: Path | None
    image_bytes: bytes


def write_painting_files(
    image_root: str | Path,
    user: str | None,
    slug: str,
    *,
    width: int = 64,
    height: int = 64,
    seed: int = 0,
    data: bytes | None = None,
    recording: bool | bytes = False,
    layout: str = "painting",
    bucket: str | None = None,
    pixel_art: bool = False,
) -> PaintingFiles:
    """Put a painting's PNG (and optionally its recording zip) where the platform stores it.

    ``layout="painting"``: ``{sub}/painting/{slug}.png`` (a prefixed slug names that
    same object); ``layout="old"``: the oldest ``{sub}/{slug}.png``; guests:
    ``{image}.png``/``{recording}.zip`` in ``art-aesthetic-computer``. ``bucket`` is the
    document's own ``bucket`` field, if it has one.
    """
    bucket_name, image_key, zip_key = painting_keys(user, slug, layout=layout, bucket=bucket)
    if data is not None:
        body = data
    elif pixel_art:
        body = pixel_art_png_bytes(width, height, seed)
    else:
        body = png_bytes(width, height, seed)
    image_path = write_file(image_root, bucket_name, image_key, body)
    recording_path: Path | None = None
    if recording is not False:
        zip_body = recording if isinstance(recording, bytes) else recording_zip_bytes(seed=seed)
        recording_path = write_file(image_root, bucket_name, zip_key, zip_body)
    return PaintingFiles(bucket_name, image_key, zip_key, image_path, recording_path, body)


@dataclass(frozen=True)
class SeedUser:
    """A platform user of a data set: sub, platform handle, whether it gets an ATProto account."""

    name: str
    sub: str
    with_atproto: bool = True


@dataclass
class Dataset:
    """Documents per collection, plus what each is meant to show."""

    users: list[SeedUser] = field(default_factory=list)
    documents: dict[str, list[Document]] = field(
        default_factory=lambda: {name: [] for name in COLLECTIONS}
    )
    files: list[PaintingFiles] = field(default_factory=list)
    # Moods whose records the platform's early code wrote with `mongoId` instead of `ref`:
    # (mood document, whether the document names the record in `atproto.rkey`).
    legacy_moods: list[tuple[Document, bool]] = field(default_factory=list)

    def add(self, collection: str, doc: Document) -> Document:
        self.documents[collection].append(doc)
        return doc

    def counts(self) -> dict[str, int]:
        return {name: len(docs) for name, docs in self.documents.items()}


DEMO_USERS = (
    ("jeffrey", True),
    ("fifi", True),
    ("amelia", True),
    ("kaito", False),  # no ATProto account: their content is not mirrored
)


def write_tape_file(
    image_root: str | Path, user: str | None, slug: str, size: int, seed: int = 0
) -> tuple[StoredObject, Mp4File]:
    """Put a tape's MP4 (``size`` bytes, streamed to disk) where the world stores it."""
    obj = tape_object(user, slug)
    return obj, write_mp4(key_path(image_root, obj.bucket, obj.key), size, seed)


def store_url(obj: StoredObject, base_url: str | None) -> str:
    """An object's URL: ``{base_url}/{bucket}/{key}`` (the sandbox's image server), or
    the platform's own object store when ``base_url`` is None."""
    if base_url is None:
        return f"https://{obj.bucket}.sfo3.digitaloceanspaces.com/{obj.key}"
    return f"{base_url.rstrip('/')}/{obj.bucket}/{obj.key}"


def demo_dataset(
    image_root: str | Path,
    users: Mapping[str, str] | None = None,
    store_base_url: str | None = None,
) -> Dataset:
    """The ``demo`` seed: writes the painting files and tape MP4s under ``image_root``,
    returns the documents.

    ``users`` maps the demo names (jeffrey, fifi, amelia, kaito) to subs; new
    subs are made for missing ones. ``store_base_url``: where the object store serves
    ``image_root`` (tapes name their MP4 by its full URL).
    """
    rng = random.Random(1234)
    subs = dict(users or {})
    ds = Dataset()
    for name, atp in DEMO_USERS:
        ds.users.append(SeedUser(name, subs.get(name) or new_sub(), atp))
    jeffrey, fifi, amelia, kaito = (u.sub for u in ds.users)
    t0 = when_ms(datetime(2025, 3, 1, 12, 0, tzinfo=UTC))

    def at(minutes: int) -> datetime:
        return t0 + timedelta(minutes=minutes, milliseconds=rng.randrange(1000))

    def painting(
        user: str | None,
        slug: str,
        minutes: int,
        size: tuple[int, int] | None,
        *,
        recording: bool = False,
        layout: str = "painting",
        pixel_art: bool = False,
        **kw: Any,
    ) -> None:
        ds.add("paintings", make_painting(user, slug, short_code(rng), at(minutes), **kw))
        if size is None:  # the image is missing from storage
            return
        ds.files.append(
            write_painting_files(
                image_root,
                user,
                slug,
                width=size[0],
                height=size[1],
                seed=minutes,
                recording=recording,
                layout=layout,
                pixel_art=pixel_art,
            )
        )

    # paintings: pixel art (16-128 px) next to large ones, a recording at each layout, a
    # prefixed slug, the oldest {sub}/{slug}.png key, a missing image, a WIP, guests.
    painting(jeffrey, "2025.03.01.12.00.00.123", 0, (32, 32), pixel_art=True)
    painting(jeffrey, "2025.03.01.12.05.10.456", 5, (1024, 1024), recording=True)
    painting(jeffrey, f"{jeffrey}/painting/2025.03.01.12.07.00.001", 7, (300, 200))
    painting(
        jeffrey,
        "2023.8.21.19.42.03.043",
        9,
        (128, 128),
        pixel_art=True,
        layout="old",
        recording=True,
    )
    painting(jeffrey, f"wip/{tokens.token_hex(6)}", 11, (64, 64), pixel_art=True, status="wip")
    painting(fifi, "2025.03.01.13.00.00.000", 60, (16, 16), pixel_art=True)
    painting(fifi, "2025.03.01.13.02.00.000", 62, (800, 800), nuked=True)
    painting(amelia, "2025.03.01.14.00.00.000", 120, (1024, 512))
    painting(amelia, "2025.03.01.14.01.00.000", 121, (128, 128), private=True)
    painting(amelia, "2025.03.01.14.05.00.000", 125, None)  # its PNG is not in storage
    painting(kaito, "2025.03.01.15.00.00.000", 180, (128, 128))
    painting(None, "2025.03.01.16.00.00.000", 240, (64, 48), pixel_art=True)
    painting(
        None, "2025.03.01.16.10.00.000:2025.03.01.16.10.00.000-rec", 250, (320, 240), recording=True
    )
    painting(None, "2025.03.01.16.20.00.000", 260, (100, 100), hidden=True)

    # moods: text in `mood`; one deleted; two legacy ones with `mongoId` records on the PDS.
    for i, (user, text) in enumerate(
        [
            (jeffrey, "painting all day"),
            (jeffrey, "🌈 feeling colourful"),
            (fifi, "kidlisp is fun"),
            (amelia, "sleepy"),
            (kaito, "hello from a user without an ATProto account"),
        ]
    ):
        ds.add("moods", make_mood(user, text, at(300 + i)))
    ds.add("moods", make_mood(fifi, "never mind", at(310), deleted=True))
    for i, (user, text, named) in enumerate(
        [(jeffrey, "an early mood", True), (fifi, "an early mood, never named", False)]
    ):
        doc = ds.add("moods", make_mood(user, text, at(290 + i)))
        ds.legacy_moods.append((doc, named))

    # pieces: some with code/source, guest ones without `user`.
    ds.add("pieces", make_piece(jeffrey, "wipe", at(400)))
    ds.add(
        "pieces",
        make_piece(
            jeffrey, "starfield", at(401), code="sf1", source="function paint() {}", ext="mjs"
        ),
    )
    ds.add("pieces", make_piece(fifi, "line", at(402)))
    ds.add("pieces", make_piece(fifi, "secret-piece", at(403), draft=True))
    ds.add("pieces", make_piece(amelia, "old-piece", at(404), nuked=True))
    ds.add("pieces", make_piece(None, "guest-piece", at(405), code="gp1", source="(ink red)"))

    # kidlisp: guest ones have no `user`.
    ds.add(
        "kidlisp",
        make_kidlisp(jeffrey, short_code(rng), "(wipe blue)\n(ink yellow)\n(line)", at(500)),
    )
    ds.add("kidlisp", make_kidlisp(fifi, short_code(rng), "(repeat 10 (box))", at(501)))
    ds.add(
        "kidlisp",
        make_kidlisp(amelia, short_code(rng), "(wipe red)", at(502), visibility="unlisted"),
    )
    ds.add("kidlisp", make_kidlisp(None, short_code(rng), "(wipe purple)", at(503)))
    ds.add("kidlisp", make_kidlisp(None, short_code(rng), "(ink green)", at(504)))
    ds.add("kidlisp", make_kidlisp(None, short_code(rng), "(wipe black)", at(505), nuked=True))

    # tapes: small MP4s made here; published once converted (`mp4Status: "complete"`),
    # a guest tape goes to `art`; one still processing, one nuked, one of a user
    # without an ATProto account.
    def tape(
        user: str | None, name: str, minutes: int, *, converted: bool = True, **kw: Any
    ) -> None:
        when = at(minutes)
        slug = f"{name}-{int(when.timestamp() * 1000)}"
        extra: dict[str, Any] = {}
        if converted:
            obj, _ = write_tape_file(image_root, user, slug, 48_000 + 1000 * minutes % 7, minutes)
            extra["mp4"] = store_url(obj, store_base_url)
        status = "complete" if converted else "processing"
        ds.add(
            "tapes", make_tape(user, slug, short_code(rng), when, mp4_status=status, **extra, **kw)
        )

    tape(jeffrey, "wand", 600)
    tape(jeffrey, "line", 601, converted=False)
    tape(fifi, "rain", 602, nuked=True)
    tape(amelia, "sleepy", 603)
    tape(kaito, "hello", 604)
    tape(None, "guest", 605)
    return ds


def legacy_mood_record(doc: Mapping[str, Any]) -> dict[str, Any]:
    """A mood record as the platform's early code wrote it: ``mongoId`` instead of ``ref``."""
    return {
        "$type": platform.MOOD,
        "mood": doc["mood"],
        "when": platform.when_string(doc["when"]),
        "mongoId": str(doc["_id"]),
    }


def create_legacy_records(
    db: Any, api: Any, sessions: Mapping[str, tuple[str, str]], ds: Dataset
) -> list[tuple[str, str]]:
    """Create the data set's legacy mood records on the PDS (``createRecord``, the PDS
    picks the key) and write ``atproto.rkey``/``uri`` back where the document names it.

    ``sessions`` maps a user sub to (did, access token). Returns [(did, uri)].
    """
    made: list[tuple[str, str]] = []
    for doc, named in ds.legacy_moods:
        did, token = sessions[doc["user"]]
        out = api.procedure(
            "com.atproto.repo.createRecord",
            {"repo": did, "collection": platform.MOOD, "record": legacy_mood_record(doc)},
            token=token,
        )
        uri = str(out["uri"])
        if named:
            rkey = uri.rsplit("/", 1)[-1]
            db.moods.update_one(
                {"_id": doc["_id"]}, {"$set": {"atproto": {"rkey": rkey, "uri": uri}}}
            )
        made.append((did, uri))
    return made


NOT_PUBLIC_FLAGS = ("nuked", "deleted", "private", "draft", "hidden")


def is_public(doc: Mapping[str, Any], collection: str = "paintings") -> bool:
    """Whether a seeded document is public (platform-facts.md §4, see
    :func:`syncd_sandbox.platform.not_public_reason`)."""
    return platform.is_public(collection, doc)
