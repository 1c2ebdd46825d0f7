"""``syncd-sandbox``: bring a dev/test world up, inspect it, break it, take it down.

    syncd-sandbox up --dir DIR [--seed demo|empty] [--rate-limits] [--reset]
    syncd-sandbox status --dir DIR [--json]
    syncd-sandbox down --dir DIR
    syncd-sandbox fault --dir DIR KIND [options]
    syncd-sandbox hooks --dir DIR on [--delay-ms MIN:MAX] [--writeback-delay-ms MIN:MAX]
                                     [--lose-fraction F] [--seed N]
    syncd-sandbox hooks --dir DIR off
    syncd-sandbox account --dir DIR create|delete NAME
    syncd-sandbox account --dir DIR password NAME PASSWORD

Fault kinds: drop-connections, fail-getmore --count N, not-writable-primary
--count N, history-loss [--keep N], pause --seconds S, restart-mongo
[--down-seconds S], restart-pds.

``hooks on`` runs the platform's own inline record writers beside the world
(platform-facts §6): every public insert gets a record with a PDS-picked key and,
a moment later, its ``atproto.rkey`` back (a ``--lose-fraction`` never does);
counters in ``DIR/hooks.stats.json``. ``hooks off`` stops them and prints them.

``account`` does what the platform does to its users' ATProto accounts, in a running
world: ``create`` makes the account on the PDS, then sets ``users.atproto`` (for an
existing user -- one without an account has documents waiting -- or a new one);
``delete`` deletes it on the PDS, then unsets ``users.atproto``; ``password`` stores
a password in ``users`` only (a wrong one, or the fix).

Exit codes: 0 done, 1 failed, 2 bad usage.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from typing import Any

from syncd_sandbox.hooks import STATS_FILE, add_option_arguments, options_from_args
from syncd_sandbox.procs import SandboxProcessError
from syncd_sandbox.seed import SEEDS
from syncd_sandbox.world import World, WorldError

# CLI fault name -> (sandbox fault kind, {cli option: fault parameter})
MONGO_FAULTS: dict[str, tuple[str, dict[str, str]]] = {
    "drop-connections": ("dropConnections", {}),
    "fail-getmore": ("failGetMore", {"count": "n"}),
    "not-writable-primary": ("notWritablePrimary", {"count": "n"}),
    "history-loss": ("truncateOplog", {"keep": "keep"}),
    "pause": ("pause", {"seconds": "seconds"}),
}
FAULT_KINDS = (*MONGO_FAULTS, "restart-mongo", "restart-pds")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # exit 2 with a one-line reason
        self.print_usage(sys.stderr)
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise SystemExit(2)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {value}")
    return value


def _seconds(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="syncd-sandbox",
        description="Dev/test world for syncd: a real local PDS, a MongoDB replica-set "
        "sandbox and an image server on 127.0.0.1. Never for production.",
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    up = sub.add_parser("up", help="start a world in DIR and seed it")
    up.add_argument("--dir", required=True, help="world directory (created if missing)")
    up.add_argument("--seed", choices=SEEDS, default="demo", help="data set (default: demo)")
    up.add_argument(
        "--rate-limits", action="store_true", help="run the PDS with its rate limits on"
    )
    up.add_argument(
        "--reset", action="store_true", help="replace a stopped world in DIR (deletes its data)"
    )
    up.add_argument("--oplog-size", type=_positive_int, help="Mongo sandbox oplog size")

    down = sub.add_parser("down", help="stop every process of the world in DIR")
    down.add_argument("--dir", required=True)

    status = sub.add_parser("status", help="show the world's processes and URLs")
    status.add_argument("--dir", required=True)
    status.add_argument("--json", action="store_true", help="print world.json plus liveness")

    fault = sub.add_parser("fault", help="inject a fault into the running world")
    fault.add_argument("--dir", required=True)
    fault.add_argument("kind", choices=FAULT_KINDS)
    fault.add_argument(
        "--count", type=_positive_int, help="fail-getmore / not-writable-primary: how many"
    )
    fault.add_argument(
        "--keep", type=_non_negative_int, default=0, help="history-loss: oplog entries kept"
    )
    fault.add_argument("--seconds", type=_seconds, help="pause: how long")
    fault.add_argument(
        "--down-seconds",
        type=_seconds,
        default=0.0,
        help="restart-mongo: time the server stays down",
    )

    hooks = sub.add_parser(
        "hooks", help="switch the platform's own inline record writers on or off"
    )
    hooks.add_argument("--dir", required=True)
    hooks.add_argument("state", choices=("on", "off"))
    add_option_arguments(hooks)

    account = sub.add_parser(
        "account", help="create or delete a user's ATProto account as the platform does"
    )
    account.add_argument("--dir", required=True)
    account.add_argument("action", choices=("create", "delete", "password"))
    account.add_argument("name", help="the world's user name (e.g. alice)")
    account.add_argument("password", nargs="?", help="password: the password to store")
    return parser


def _cmd_account(args: argparse.Namespace) -> int:
    world = World.load(args.dir)
    acc = world.account(args.action, args.name, password=args.password)
    print(json.dumps({"action": args.action, "account": acc.to_json()}))
    return 0


def _cmd_hooks(args: argparse.Namespace) -> int:
    world = World.load(args.dir)
    if args.state == "on":
        try:
            options = options_from_args(args)
        except ValueError as exc:
            print(f"syncd-sandbox: {exc}", file=sys.stderr)
            return 2
        record = world.hooks_on(options)
        print(
            f"platform hooks on (pid {record.pid}): delay {options.delay_ms} ms, "
            f"write-back {options.writeback_delay_ms} ms, lost {options.lose_fraction:.0%}; "
            f"stats in {world.dir / STATS_FILE}"
        )
        return 0
    stats = world.hooks_off()
    print(json.dumps({"hooks": "off", "stats": stats.get("stats", {})}, indent=2))
    return 0


def _summary(world: World) -> str:
    lines = [
        f"world up in {world.dir}  (dev/test only)",
        f"  mongo   {world.mongo_uri}  database {world.database}",
        f"  pds     {world.pds_url}  (plc {world.plc_url})",
        f"  images  {world.image_base_url}/{{bucket}}/{{key}}  from {world.dir / 'images'}",
        "  accounts:",
    ]
    for name, acc in world.accounts.items():
        if acc.has_atproto:
            lines.append(f"    {name:<8} {acc.sub:<34} {acc.handle}  {acc.did}  pw {acc.password}")
        else:
            lines.append(f"    {name:<8} {acc.sub:<34} (no ATProto account)")
    lines += [
        f"  PDS admin password: {world.admin_password}  (HTTP basic auth, user 'admin')",
        "",
        f"run syncd:   syncd run --config {world.config_path}",
        f"stop world:  syncd-sandbox down --dir {world.dir}",
    ]
    return "\n".join(lines)


def _cmd_up(args: argparse.Namespace) -> int:
    started = time.monotonic()
    world = World.up(
        args.dir, args.seed, args.rate_limits, oplog_size=args.oplog_size, reset=args.reset
    )
    print(_summary(world))
    print(f"(up in {time.monotonic() - started:.1f}s)")
    return 0


def _cmd_down(args: argparse.Namespace) -> int:
    world = World.load(args.dir)
    stopped = world.down()
    left = [name for name, rec in world.processes().items() if rec.is_running()]
    if left:
        print(f"still running: {', '.join(left)}", file=sys.stderr)
        return 1
    print(f"stopped: {', '.join(stopped) or 'nothing (already down)'}")
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    world = World.load(args.dir)
    status = world.status()
    if args.json:
        out = dict(world.info)
        out["status"] = {
            name: {"pid": s.pid, "running": s.running, "healthy": s.healthy}
            for name, s in status.items()
        }
        print(json.dumps(out, indent=2))
    else:
        print(f"world {world.dir}: {world.info.get('state')}")
        for name, s in status.items():
            state = "healthy" if s.healthy else ("running" if s.running else "stopped")
            print(f"  {name:<7} pid {s.pid:<8} {state}")
        print(f"  mongo {world.mongo_uri}  pds {world.pds_url}  images {world.image_base_url}")
    return 0 if all(s.healthy for s in status.values()) else 1


def _cmd_fault(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    world = World.load(args.dir)
    kind = args.kind
    if kind == "restart-mongo":
        uri = world.restart_mongo(args.down_seconds)
        print(f"mongo restarted at {uri}")
        return 0
    if kind == "restart-pds":
        url = world.restart_pds()
        print(f"pds restarted at {url}")
        return 0
    fault_kind, options = MONGO_FAULTS[kind]
    params: dict[str, Any] = {}
    for option, param in options.items():
        value = getattr(args, option)
        if value is None:
            parser.error(f"fault {kind} needs --{option.replace('_', '-')}")
        params[param] = value
    reply = world.fault(fault_kind, **params)
    print(json.dumps({"fault": fault_kind, **params, "reply": reply}, default=str))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "up":
            return _cmd_up(args)
        if args.command == "down":
            return _cmd_down(args)
        if args.command == "status":
            return _cmd_status(args)
        if args.command == "hooks":
            return _cmd_hooks(args)
        if args.command == "account":
            return _cmd_account(args)
        return _cmd_fault(args, parser)
    except WorldError as exc:
        print(f"syncd-sandbox: {exc}", file=sys.stderr)
        return 1
    except SandboxProcessError as exc:
        print(f"syncd-sandbox: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
