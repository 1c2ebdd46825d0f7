"""One account's ops in order: what a writer takes next.

* **Per document, in order.** A document's ops join the queue in the order the
  router submitted them; a batch never holds the same document twice.
* **Latest state wins.** Every op carries the document as it is now, so when a
  newer op for a document arrives while an older one still waits (behind a slow
  image, or behind a rate-limited account), the older one is *superseded*:
  dropped, its image work cancelled, its change completed. A create is therefore
  never sent for a document whose newest known state is not public, and rapid
  edits cost one image fetch, not one per edit. Completing the superseded change
  early is safe for the resume position: the newer change is still outstanding,
  so the saved position stays before it, and a replay carries the newest state.
* **Gates.** An op that waits for its image is not ready; the ops behind it of
  the same document wait too (there are none but the newest, by the rule above).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

from syncd.changes import Op

Ident = tuple[str, str]  # (collection, document key)


def ident(op: Op) -> Ident:
    return (op.change.collection, op.change.key)


class DocumentQueue:
    def __init__(self, on_superseded: Callable[[Op], None]) -> None:
        # One entry per document, in the order its *current* op was submitted;
        # the value: (op, ready).
        self._ops: OrderedDict[Ident, tuple[Op, bool]] = OrderedDict()
        self._ready = 0
        self._on_superseded = on_superseded

    def __len__(self) -> int:
        return len(self._ops)

    @property
    def ready(self) -> int:
        """Ops that can be taken now (not waiting for their image)."""
        return self._ready

    def push(self, op: Op, *, ready: bool = True) -> None:
        """Queue ``op``; an older op of the same document still waiting is superseded.

        The newer op takes the older one's place in line, so a document that keeps
        changing is not starved by documents submitted after its first change."""
        key = ident(op)
        old = self._ops.get(key)
        if old is not None:
            if old[1]:
                self._ready -= 1
            self._ops[key] = (op, ready)
            self._on_superseded(old[0])
        else:
            self._ops[key] = (op, ready)
        if ready:
            self._ready += 1

    def mark_ready(self, op: Op) -> bool:
        """``op``'s image is ready; False when ``op`` was superseded meanwhile."""
        key = ident(op)
        current = self._ops.get(key)
        if current is None or current[0] is not op:
            return False
        if not current[1]:
            self._ops[key] = (op, True)
            self._ready += 1
        return True

    def take(self, limit: int) -> list[Op]:
        """Up to ``limit`` ready ops, oldest first (one per document by construction)."""
        out: list[Op] = []
        for key, (op, ready) in list(self._ops.items()):
            if len(out) >= limit:
                break
            if ready:
                out.append(op)
                del self._ops[key]
        self._ready -= len(out)
        return out

    def drop_where(self, pred: Callable[[Op], bool]) -> list[Op]:
        """Remove the ops ``pred`` picks (an account parked: those that would write); the
        others keep their places. Returns the removed ops, in order."""
        out: list[Op] = []
        for key, (op, ready) in list(self._ops.items()):
            if pred(op):
                out.append(op)
                del self._ops[key]
                if ready:
                    self._ready -= 1
        return out

    def drop_all(self) -> list[Op]:
        """Empty the queue (shutdown, an account parked): the ops, in order."""
        ops = [op for op, _ in self._ops.values()]
        self._ops.clear()
        self._ready = 0
        return ops
