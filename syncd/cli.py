"""The ``syncd`` command line. Every subcommand reads the same config file.

Exit codes: 0 success, 1 failure at run time, 2 bad usage or bad config (one
line on stderr naming the key).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from typing import Any

from syncd import config as config_mod
from syncd import logs
from syncd.config import Config, ConfigError
from syncd.state.model import StateError

DESCRIPTION = (
    "syncd: mirror MongoDB documents to ATProto records (backfill, then tail change streams)."
)


def _add_config(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config",
        metavar="PATH",
        help="TOML config file (default: $SYNCD_CONFIG). Secrets may come from "
        "SYNCD_MONGO_URI / SYNCD_PDS_URL or systemd credentials.",
    )


def _collections(value: str) -> list[str]:
    return [c.strip() for c in value.split(",") if c.strip()]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="syncd", description=DESCRIPTION)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "run",
        help="run the daemon (backfill on first start, then tail the change stream)",
        description="Run until SIGTERM/SIGINT. On first start (no saved position) it backfills "
        "every collection, then tails the change stream; later starts resume from the saved position.",
    )
    _add_config(p)

    p = sub.add_parser(
        "backfill",
        help="one idempotent pass over existing documents, then exit",
        description="Publish every public document that lacks its record (and fix stale or "
        "non-public ones) in one pass. Safe to rerun and to run while the daemon runs.",
    )
    _add_config(p)
    p.add_argument(
        "--collections", type=_collections, help="comma-separated subset, e.g. paintings,moods"
    )
    p.add_argument(
        "--account", metavar="HANDLE|DID", help="only documents owned by this ATProto account"
    )

    p = sub.add_parser(
        "status",
        help="saved position, record counts, skipped and dead-lettered documents",
        description="Reads the state store only (works while the daemon runs or is stopped).",
    )
    _add_config(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")

    from syncd.admin.cli import add_admin_commands

    add_admin_commands(sub, _add_config)
    return parser


def load_config(args: argparse.Namespace) -> Config:
    cfg = config_mod.load(args.config)
    collections = getattr(args, "collections", None)
    if collections:
        unknown = set(collections) - set(cfg.mongo.collections)
        if unknown:
            raise ConfigError(f"--collections: not configured: {sorted(unknown)}")
    return cfg


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args)
    except ConfigError as exc:
        print(f"syncd: config error: {exc}", file=sys.stderr)
        return 2
    logs.configure(cfg.logging.level, cfg.logging.format)
    try:
        return _dispatch(parser, cfg, args)
    except StateError as exc:
        # One line naming the store and what to do; exit 2 like a config error (a
        # restart cannot fix it: systemd's RestartPreventExitStatus=2 holds it).
        print(f"syncd: state error: {exc}", file=sys.stderr)
        return 2


def _dispatch(parser: argparse.ArgumentParser, cfg: Config, args: argparse.Namespace) -> int:
    if args.command == "run":
        from syncd.daemon import Daemon

        return Daemon(cfg).run()
    if args.command == "backfill":
        from syncd.oneshot import run_backfill

        return asyncio.run(run_backfill(cfg, collections=args.collections, account=args.account))
    if args.command == "status":
        from syncd.status import collect, render

        report = collect(cfg)
        print(json.dumps(report, indent=2, default=str) if args.json else render(report))
        return 0
    handler: Any = getattr(args, "handler", None)
    if handler is None:
        parser.error(f"unknown command {args.command}")
    return int(handler(cfg, args))


if __name__ == "__main__":
    sys.exit(main())
