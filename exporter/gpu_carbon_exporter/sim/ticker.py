"""A simulator's files kept current in a thread: one loop for every simulated tree."""
from __future__ import annotations

import threading
from typing import Callable


class Ticker:
    """Calls ``update(clock())`` ``hz`` times a second until ``stop()``; a subclass sets ``thread_name``
    and defines ``update``. A tree removed under it (the exporter exiting) ends the loop."""

    thread_name = "sim"
    _stop: threading.Event

    def update(self, t: float) -> None:
        raise NotImplementedError

    def run(self, clock: Callable[[], float], hz: float = 50.0) -> None:
        """Keep the files current from ``clock()`` (scenario time) in a thread."""
        def loop() -> None:
            while not self._stop.wait(1.0 / hz):
                try:
                    self.update(clock())
                except OSError:  # the tree was removed (exporter exiting)
                    return
        threading.Thread(target=loop, name=self.thread_name, daemon=True).start()

    def stop(self) -> None:
        self._stop.set()
