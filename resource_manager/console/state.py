"""The one state object the console's worker threads update and its UI thread reads."""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field

from resource_manager.monitor import PoolSnapshot


@dataclass
class ConsoleState:
    session_id: str
    snapshot: PoolSnapshot = field(default_factory=PoolSnapshot)
    autoscale: bool = False
    log: deque[str] = field(default_factory=lambda: deque(maxlen=200))
    busy: str = ""  # the command being carried out, if any
    recent: deque[str] = field(default_factory=lambda: deque(maxlen=50))  # job transitions
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add_log(self, line: str) -> None:
        with self.lock:
            self.log.append(f"{time.strftime('%H:%M:%S')} {line}")

    def copy_log(self, last: int) -> list[str]:
        with self.lock:
            return list(self.log)[-last:]
