"""The one bounded cache idiom of the server: a dict that forgets its least recently used entries."""

from __future__ import annotations

from collections import OrderedDict


class LruDict(OrderedDict):
    """Holds at most ``size`` entries: ``get`` and writing make an entry the newest, writing
    beyond ``size`` drops the oldest.  Not thread-safe: callers that share one hold a lock."""

    def __init__(self, size: int):
        super().__init__()
        self.size = size

    def get(self, key, default=None):
        if key not in self:
            return default
        self.move_to_end(key)
        return self[key]

    def __setitem__(self, key, value) -> None:
        super().__setitem__(key, value)
        self.move_to_end(key)
        while len(self) > self.size:
            self.popitem(last=False)
