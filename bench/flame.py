"""Summarise a py-spy ``--format raw`` profile: self and inclusive time per function.

python -m bench.flame PROFILE.txt [--top 30] [--filter syncd]
"""

from __future__ import annotations

import argparse
import re
from collections import Counter

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def _name(frame: str) -> str:
    m = _FRAME.match(frame.strip())
    if not m:
        return frame.strip()
    path = m.group("file")
    for marker in ("site-packages/", "lib/python3.11/", "/work/main/"):
        if marker in path:
            path = path.split(marker, 1)[1]
    return f"{m.group('func')} ({path})"


def summarise(path: str) -> tuple[int, Counter[str], Counter[str]]:
    total = 0
    own: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    with open(path) as f:
        for line in f:
            stack, _, count = line.rstrip("\n").rpartition(" ")
            if not stack or not count.isdigit():
                continue
            n = int(count)
            total += n
            frames = [_name(fr) for fr in stack.split(";") if fr]
            if frames:
                own[frames[-1]] += n
            for fr in set(frames):
                incl[fr] += n
    return total, own, incl


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.flame")
    ap.add_argument("profile")
    ap.add_argument("--top", type=int, default=30)
    ap.add_argument("--filter", default="")
    args = ap.parse_args(argv)
    total, own, incl = summarise(args.profile)
    print(f"{total} samples")
    print("-- self --")
    for name, n in own.most_common(args.top):
        print(f"{100 * n / total:5.1f}%  {name}")
    print("-- inclusive --")
    shown = 0
    for name, n in incl.most_common():
        if args.filter and args.filter not in name:
            continue
        print(f"{100 * n / total:5.1f}%  {name}")
        shown += 1
        if shown >= args.top:
            break
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
