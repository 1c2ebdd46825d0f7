"""``python -m syncd_sandbox.mongo``: run the MongoDB replica-set sandbox (dev/test only).

Binds, writes ``{"host", "port", "pid", "uri"}`` atomically to ``--ready-file`` (if
given), prints ``READY <uri>`` and serves until SIGTERM/SIGINT, then flushes and exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import os
import signal
import sys
from pathlib import Path

from .server import DEFAULT_OPLOG_SIZE, VERSIONS, MongoSandbox


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m syncd_sandbox.mongo",
        description="MongoDB replica-set sandbox for tests and demos (dev/test only, never production).",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=0, help="port to bind; 0 picks a free one")
    p.add_argument("--data-dir", default=None, help="persist data, indexes and oplog here")
    p.add_argument(
        "--oplog-size", type=int, default=DEFAULT_OPLOG_SIZE, help="max oplog entries retained"
    )
    p.add_argument(
        "--ready-file", default=None, help="write host/port/pid/uri JSON here once bound"
    )
    p.add_argument(
        "--max-wire-version",
        type=int,
        default=21,
        choices=sorted(VERSIONS),
        help="17: MongoDB 6.0.8, 21: 7.0.14 (default), 25: 8.0.4",
    )
    p.add_argument("--no-fsync", action="store_true", help="skip fsync of the journal")
    p.add_argument("--log-level", default="WARNING")
    return p.parse_args(argv)


def write_ready_file(path: Path, info: dict[str, object]) -> None:
    """Write ``info`` as JSON to ``path`` atomically (tmp + rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(info))
    os.replace(tmp, path)


async def run(args: argparse.Namespace) -> int:
    sandbox = MongoSandbox(
        host=args.host,
        port=args.port,
        data_dir=args.data_dir,
        oplog_size=args.oplog_size,
        max_wire_version=args.max_wire_version,
        fsync=not args.no_fsync,
    )
    await sandbox.start()
    # Stored documents are long-lived: keep the cyclic GC from rescanning them all the time.
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    info = {
        "host": sandbox.advertise_host,
        "port": sandbox.port,
        "pid": os.getpid(),
        "uri": sandbox.uri,
    }
    if args.ready_file:
        write_ready_file(Path(args.ready_file), info)
    print(f"READY {sandbox.uri}", flush=True)
    await stop.wait()
    await sandbox.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=getattr(logging, str(args.log_level).upper(), logging.WARNING))
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
