"""A RexUniNLU adapter's window hook as a context manager, shared by the NLU model tests."""


class Recorder:
    """Window hook: every window the adapter runs, in order."""

    def __init__(self, adapter):
        self.adapter = adapter
        self.windows = []

    def __enter__(self):
        self.start = self.adapter.forward_count
        self.adapter.window_hook = self.windows.append
        return self

    def __exit__(self, *exc):
        self.adapter.window_hook = None
        self.count = self.adapter.forward_count - self.start
