"""Gradio's record of which events each session still waits for, with the sessions that wait for nothing forgotten.

Gradio (6.31, `Queue.pending_event_ids_session`: session hash → set of event ids) adds a set when a session pushes
its first event and removes each event id once its result is streamed, but drops an emptied set only when the
session is cancelled. Every `/gradio_api/call/<name>` opens a new session, so the dict kept an empty set and a
32-character key per UI call for the life of the process: found by a traced soak (2026-11-27, every route, the
2-core CPU VM: `gradio/queueing.py:363`, 729 sets and as many event-id strings kept over 740 UI calls; ~2 of the
0.2–0.3 Python blocks the soaks kept per request), ~300 bytes a call, and Wenmo's own check of an event id
(app/web/api.py) scans the dict on every result request.

`PendingEventIds` replaces that dict (app/web/server.py installs it). New sessions are added only at a push, one
at a time under Gradio's pending-message lock; before one is added past the high-water mark, the empty sets are
dropped and the mark moves to twice what is left (at least `floor`): amortised O(1) per session. Dropping an empty
set loses nothing: Gradio's result stream closes as its session's set empties (routes.py), and a later event of
that session adds a new set (queueing.py: `if session_hash not in …: … = set()`). Non-empty sets are never dropped.
Imports nothing from the web stack.
"""

from __future__ import annotations

FLOOR = 64


class PendingEventIds(dict[str, set[str]]):
    def __init__(self, floor: int = FLOOR) -> None:
        super().__init__()
        self.floor = floor
        self._mark = floor
        self.pruned = 0

    def __setitem__(self, session: str, ids: set[str]) -> None:
        if session not in self and len(self) >= self._mark:
            self.prune()
        super().__setitem__(session, ids)

    def prune(self) -> int:
        """Forget every session with no event pending; how many were forgotten."""
        empty = [session for session, ids in self.items() if not ids]
        for session in empty:
            del self[session]
        self.pruned += len(empty)
        self._mark = max(self.floor, 2 * len(self))
        return len(empty)


def install(queue: object) -> PendingEventIds | None:
    """Put a PendingEventIds in place of Gradio's dict on `queue` (its sessions carried over); None — nothing
    changed — if Gradio's queue no longer has that dict."""
    current = getattr(queue, "pending_event_ids_session", None)
    if type(current) is not dict:
        return current if isinstance(current, PendingEventIds) else None
    pending = PendingEventIds()
    dict.update(pending, current)
    queue.pending_event_ids_session = pending  # type: ignore[attr-defined]
    return pending
