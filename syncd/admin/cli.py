"""Registers the admin subcommands on the ``syncd`` parser.

Every command is a dry run unless ``--apply`` is given: it prints what it would
do and changes nothing (no PDS write, no login, no state or MongoDB write).
``--json`` prints a machine-readable summary on stdout instead of the report;
progress goes to stderr (a bar on a terminal, plain lines otherwise).

Exit codes: 0 success (a dry run that finds differences still succeeds, unless
``reconcile --check``: then 1); 1 some fixes failed (``--apply``) or
``--check`` found differences; 2 bad usage (unknown account or collection).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from syncd.config import Config

T = TypeVar("T")

COMMON_EPILOG = (
    "Dry run by default: prints what would change and changes nothing; --apply does it. "
    "Safe to run while the daemon runs (records have deterministic keys; the state store "
    "serialises writers) and safe to interrupt and rerun: every step is recomputed from a "
    "fresh listing of the PDS."
)


def _collections(value: str) -> list[str]:
    return [c.strip() for c in value.split(",") if c.strip()]


def _common(p: argparse.ArgumentParser, *, apply_help: str) -> None:
    p.add_argument("--apply", action="store_true", help=apply_help)
    p.add_argument("--json", action="store_true", help="print a machine-readable summary")
    p.add_argument(
        "--progress",
        choices=("auto", "bar", "lines", "off"),
        default="auto",
        help="progress on stderr: a bar on a terminal, plain lines otherwise (default auto)",
    )


def _account_arg(p: argparse.ArgumentParser, *, required: bool, extra: str = "") -> None:
    p.add_argument(
        "--account",
        metavar="HANDLE|DID",
        required=required,
        help="an ATProto handle or DID; 'art' (or 'guest') names the guest account" + extra,
    )


def _collections_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--collections",
        type=_collections,
        metavar="LIST",
        help="comma-separated subset of the configured collections, e.g. paintings,moods "
        "(default: all)",
    )


def add_admin_commands(sub: Any, add_config: Callable[[argparse.ArgumentParser], None]) -> None:
    fmt = argparse.RawDescriptionHelpFormatter

    p = sub.add_parser(
        "reconcile",
        help="compare MongoDB with the PDS both ways; fix the differences with --apply",
        formatter_class=fmt,
        description=(
            "List every record the PDS holds for the mirrored collections and compare them "
            "with the public documents that should produce them. Reports:\n"
            "  missing    public document, no record              -> create it\n"
            "  orphan     record whose ref names no public document -> delete it\n"
            "  duplicate  several records for one ref              -> keep one, delete the rest\n"
            "             (keeps the record at the key syncd would use, else the earliest)\n"
            "  stale      record content differs from the document -> update it\n"
            "  blob       painting thumbnail invalid / not the ledger's blob -> update it\n"
            "  ledger     syncd's ledger row missing or wrong      -> rewrite it\n"
            "  backref    document's atproto.rkey/uri/cid wrong    -> set or unset it\n"
            "Writes go through the daemon's own publish path (same records, same keys)."
        ),
        epilog=COMMON_EPILOG + " Exit code: 0 (also when a dry run finds differences; use "
        "--check to get 1 then), 1 when --apply could not fix everything, 2 bad usage.",
    )
    add_config(p)
    _account_arg(p, required=False, extra=" (default: every user with atproto.did)")
    _collections_arg(p)
    _common(p, apply_help="fix every difference (default: dry run, report only)")
    p.add_argument(
        "--check", action="store_true", help="exit 1 when a dry run finds any difference"
    )
    p.add_argument(
        "--details",
        type=int,
        default=20,
        metavar="N",
        help="list at most N differences per collection in the text report (default 20)",
    )
    p.set_defaults(handler=run_reconcile)

    p = sub.add_parser(
        "wipe",
        help="delete one account's records (and syncd's ledger rows and back-references)",
        formatter_class=fmt,
        description=(
            "Delete every record of the chosen collections from the account's repository "
            "(applyWrites batches of up to 200), drop syncd's ledger rows for them and $unset "
            "atproto.rkey/uri/cid on the account's documents. The key each public document's "
            "record had is kept in the state store, so `syncd restore` brings the records "
            "back under the same keys.\n"
            "Note: the daemon republishes any public document that changes afterwards; wipe is "
            "a step before `restore` (or before removing the account), not a way to hide content."
        ),
        epilog=COMMON_EPILOG,
    )
    add_config(p)
    _account_arg(p, required=True)
    _collections_arg(p)
    _common(p, apply_help="delete the records (default: dry run, report only)")
    p.set_defaults(handler=run_wipe)

    p = sub.add_parser(
        "restore",
        help="publish every public document of one account that has no record",
        formatter_class=fmt,
        description=(
            "Publish each public document of the account (the guest account 'art' included) "
            "that has no record in its repository, through the daemon's publish path. Keys "
            "are the ones syncd would use: the ledger's, else the document's atproto.rkey, "
            "else the key `syncd wipe` remembered, else the one derived from the document -- "
            "so wipe + restore gives back the same records under the same keys. Idempotent: "
            "a second run finds nothing to do. Other differences are left to `reconcile`."
        ),
        epilog=COMMON_EPILOG,
    )
    add_config(p)
    _account_arg(p, required=True)
    _collections_arg(p)
    _common(p, apply_help="publish the missing records (default: dry run, report only)")
    p.set_defaults(handler=run_restore)

    dl = sub.add_parser(
        "dead-letters",
        help="list dead-lettered documents, or retry them after fixing the data or config",
        description="Documents syncd could not publish, with the reason (see also `status`).",
    )
    dsub = dl.add_subparsers(dest="dl_command", required=True, metavar="ACTION")
    p = dsub.add_parser(
        "list",
        help="show dead letters: collection, id, reason, detail, attempts, last seen",
        description="Show dead letters, newest first. Details are redacted (no secrets).",
    )
    add_config(p)
    p.add_argument("--collection", help="only this collection")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=run_dead_letters_list)
    p = dsub.add_parser(
        "retry",
        help="re-read the documents and publish them again (after fixing the cause)",
        formatter_class=fmt,
        description=(
            "Re-read each selected document and hand it to the publish path, as the daemon "
            "would. Success clears the dead letter; a document that still fails is recorded "
            "again with its new reason (attempts + 1); a document that is gone or no longer "
            "public has its record removed and its dead letter cleared."
        ),
        epilog="Dry run by default (lists what would be retried); --apply retries.",
    )
    add_config(p)
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument(
        "--id",
        action="append",
        dest="ids",
        metavar="ID",
        help="a document id (or COLLECTION/ID); repeat for several",
    )
    which.add_argument("--all", action="store_true", help="every dead letter (see --collection)")
    p.add_argument("--collection", help="only this collection")
    _common(p, apply_help="retry them (default: dry run, list only)")
    p.set_defaults(handler=run_dead_letters_retry)


# -- running -------------------------------------------------------------------------


def _reporter(prefix: str, args: argparse.Namespace) -> Any:
    from syncd.admin.progress import Reporter

    mode = {"auto": "auto", "bar": "rich", "lines": "plain", "off": "off"}[
        getattr(args, "progress", "auto")
    ]
    return Reporter(prefix, mode=mode)


def _with_engine(cfg: Config, work: Callable[[Any], Awaitable[T]]) -> T:
    from syncd.engine import Engine

    async def main() -> T:
        engine = Engine(cfg)
        try:
            return await work(engine)
        finally:
            await engine.aclose()

    return asyncio.run(main())


def _collections_of(cfg: Config, args: argparse.Namespace) -> list[str]:
    chosen = getattr(args, "collections", None)
    return list(chosen) if chosen else list(cfg.mongo.collections)


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, default=str, ensure_ascii=False))


def _usage(message: str) -> int:
    print(f"syncd: {message}", file=sys.stderr)
    return 2


def run_reconcile(cfg: Config, args: argparse.Namespace, *, kinds: Any = None) -> int:
    from syncd.admin.reconcile import AccountNotFound, reconcile, render

    command = "restore" if kinds is not None else "reconcile"
    collections = _collections_of(cfg, args)
    with _reporter(command, args) as reporter:
        try:
            outcome = _with_engine(
                cfg,
                lambda engine: reconcile(
                    engine,
                    account=args.account,
                    collections=collections,
                    apply=args.apply,
                    reporter=reporter,
                    kinds=kinds,
                    command=command,
                ),
            )
        except AccountNotFound as exc:
            return _usage(str(exc))
    if args.json:
        _print_json(outcome.to_json())
    else:
        print(render(outcome, details=getattr(args, "details", 20)))
    if args.apply:
        return 1 if outcome.failed else 0
    return 1 if getattr(args, "check", False) and outcome.differences else 0


def run_restore(cfg: Config, args: argparse.Namespace) -> int:
    from syncd.admin.diff import MISSING

    return run_reconcile(cfg, args, kinds={MISSING})


def run_wipe(cfg: Config, args: argparse.Namespace) -> int:
    from syncd.admin.reconcile import AccountNotFound
    from syncd.admin.wipe import render, wipe

    collections = _collections_of(cfg, args)
    with _reporter("wipe", args) as reporter:
        try:
            outcome = _with_engine(
                cfg,
                lambda engine: wipe(
                    engine,
                    account=args.account,
                    collections=collections,
                    apply=args.apply,
                    reporter=reporter,
                ),
            )
        except AccountNotFound as exc:
            return _usage(str(exc))
    if args.json:
        _print_json(outcome.to_json())
    else:
        print(render(outcome))
    return 1 if outcome.failed else 0


def _check_collection(cfg: Config, args: argparse.Namespace) -> list[str] | None:
    coll = getattr(args, "collection", None)
    if coll is None:
        return None
    if coll not in cfg.mongo.collections:
        raise ValueError(f"--collection: not configured: {coll!r}")
    return [coll]


def run_dead_letters_list(cfg: Config, args: argparse.Namespace) -> int:
    from syncd.admin.deadletters import letter_json, render_list, select
    from syncd.state import open_store

    try:
        collections = _check_collection(cfg, args)
    except ValueError as exc:
        return _usage(str(exc))
    store = open_store(cfg)
    try:
        letters = select(store, collections=collections)
    finally:
        store.close()
    if args.json:
        _print_json({"dead_letters": [letter_json(d) for d in letters], "count": len(letters)})
    else:
        print(render_list(letters))
    return 0


def run_dead_letters_retry(cfg: Config, args: argparse.Namespace) -> int:
    from syncd.admin.deadletters import render_retry, retry

    try:
        collections = _check_collection(cfg, args)
    except ValueError as exc:
        return _usage(str(exc))
    with _reporter("dead-letters", args) as reporter:
        outcome = _with_engine(
            cfg,
            lambda engine: retry(
                engine,
                collections=collections,
                ids=None if args.all else args.ids,
                apply=args.apply,
                reporter=reporter,
            ),
        )
    if args.json:
        _print_json(outcome.to_json())
    else:
        print(render_retry(outcome))
    return 1 if outcome.still_dead else 0
