"""app/web/queuesessions.py: Gradio's per-session pending-event record with the sessions that wait for nothing
forgotten — empty sets dropped before the dict passes its high-water mark, non-empty ones never."""

from __future__ import annotations

from types import SimpleNamespace

from app.web import queuesessions
from app.web.queuesessions import PendingEventIds


def call(pending: PendingEventIds, i: int, finish: bool = True) -> None:
    """What Gradio does for one /gradio_api/call: a new session's set, its event id added, removed once streamed."""
    session = f"s{i}"
    if session not in pending:
        pending[session] = set()
    pending[session].add(f"e{i}")
    if finish:
        pending[session].remove(f"e{i}")


def test_ten_thousand_finished_calls_leave_a_bounded_dict():
    pending = PendingEventIds(floor=64)
    for i in range(10_000):
        call(pending, i)
    assert len(pending) <= 64
    assert pending.pruned >= 10_000 - 64


def test_sessions_still_waiting_are_kept_and_the_mark_follows_them():
    pending = PendingEventIds(floor=8)
    for i in range(100):
        call(pending, i, finish=i % 10 != 0)  # every tenth call still waits for its result
    waiting = {f"s{i}" for i in range(0, 100, 10)}
    assert waiting <= set(pending)
    assert all(pending[s] == {f"e{s[1:]}"} for s in waiting)
    assert len(pending) <= 2 * len(waiting) + 8


def test_updating_a_known_session_never_prunes():
    pending = PendingEventIds(floor=2)
    pending["a"], pending["b"] = set(), {"x"}
    pending["b"] -= {"x"}  # Gradio's clean_events does this: __setitem__ on a known key
    assert set(pending) == {"a", "b"} and pending.pruned == 0


def test_install_carries_the_sessions_over_and_leaves_an_unknown_shape_alone():
    queue = SimpleNamespace(pending_event_ids_session={"s": {"e"}})
    installed = queuesessions.install(queue)
    assert isinstance(queue.pending_event_ids_session, PendingEventIds) and installed is queue.pending_event_ids_session
    assert queue.pending_event_ids_session == {"s": {"e"}}
    assert queuesessions.install(queue) is installed  # twice: the same one
    assert queuesessions.install(SimpleNamespace()) is None
    assert queuesessions.install(SimpleNamespace(pending_event_ids_session=[])) is None


def test_the_installed_gradio_keeps_the_dict_this_replaces():
    """If a Gradio upgrade renames or retypes it, this fails rather than the fix going quietly unused."""
    import gradio as gr

    with gr.Blocks() as blocks:
        gr.Textbox()
    blocks.queue()
    assert type(blocks._queue.pending_event_ids_session) is dict
    assert isinstance(queuesessions.install(blocks._queue), PendingEventIds)
