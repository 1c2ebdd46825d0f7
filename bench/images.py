"""The sandbox image server with a listen backlog that takes syncd's concurrency.

``syncd_sandbox.images`` uses ``socketserver``'s default backlog of 5: when syncd
fetches a batch of paintings at once (GET + HEAD each), connections beyond the
backlog have their SYNs dropped and retried by the kernel after 1, 3, 7 s —
stalls that object storage (what the server stands in for) would not cause and
that made the painting backfill's wall time swing from 3 to 13 s with syncd idle.
The benchmark runs the same server with a backlog of 1024.

    python -m bench.images --root DIR [--port N] [--ready-file F]
"""

from __future__ import annotations

from syncd_sandbox import images

images._Server.request_queue_size = 1024

if __name__ == "__main__":
    raise SystemExit(images.main())
