"""systemd's notify protocol (sd_notify), spoken from the stage loop itself.

``READY=1`` once the stage runs, ``WATCHDOG=1`` at least every half ``WATCHDOG_USEC``,
``STOPPING=1`` when it drains, ``STATUS=...`` for ``systemctl status``. Without
``NOTIFY_SOCKET`` every call is a no-op.
"""

from __future__ import annotations

import os
import socket


class Notifier:
    def __init__(self) -> None:
        addr = os.environ.get("NOTIFY_SOCKET")
        self.addr = None
        self.sock = None
        if addr:
            self.addr = "\0" + addr[1:] if addr.startswith("@") else addr
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        usec = int(os.environ.get("WATCHDOG_USEC", "0") or 0)
        wpid = os.environ.get("WATCHDOG_PID")
        if wpid and int(wpid) != os.getpid():
            usec = 0
        self.watchdog_interval_ns = usec * 1000 // 2 if usec else 0
        self._last_watchdog = 0

    @property
    def enabled(self) -> bool:
        return self.sock is not None

    def send(self, *lines: str) -> None:
        if self.sock is not None:
            self.sock.sendto("\n".join(lines).encode(), self.addr)

    def watchdog(self, now_ns: int) -> None:
        if self.watchdog_interval_ns and now_ns - self._last_watchdog >= self.watchdog_interval_ns:
            self._last_watchdog = now_ns
            self.send("WATCHDOG=1")
