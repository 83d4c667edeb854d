"""Keeping a process alive after its main script ends.

Consumers and schedulers run in daemon threads. Users of the original funboost end a script with
``f.consume()`` and expect the process to keep working; a non-daemon thread that waits for the main
thread and then for ``still_needed()`` to turn false gives exactly that, and lets the interpreter exit
normally once nothing is left to do. ``FUNBOOST_NO_KEEPALIVE=1`` turns it off (tests).
"""
from __future__ import annotations

import os
import threading
import time
from typing import Callable, Optional


class KeepAlive:
    def __init__(self, name: str, still_needed: Callable[[], bool],
                 on_exit: Optional[Callable[[], None]] = None) -> None:
        self.name = name
        self.still_needed = still_needed
        self.on_exit = on_exit
        self._thread: Optional[threading.Thread] = None
        self._lock = threading.Lock()

    def start(self) -> None:
        if os.environ.get("FUNBOOST_NO_KEEPALIVE") == "1":
            return
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name=self.name, daemon=False)
                self._thread.start()

    def _run(self) -> None:
        threading.main_thread().join()
        while self.still_needed():
            time.sleep(1)
        if self.on_exit is not None:
            self.on_exit()
