"""Fault injection of the exchange simulator (``bot4 exchange serve``; all off by default).
Where each fault acts: the downstream packets (``drop_every``, ``duplicate_every``,
``reorder_every``, ``delay_ms``) and the re-request answers (``rerequest_delay_ms``) in
:mod:`bot4.gateways.md_publisher`; the OUCH connections (``disconnect_after``,
``disconnect_random``, ``refuse_login``) in :mod:`bot4.gateways.ouch_server`; the busts
(``bust_every``, ``bust_fills``, ``bust_matches``) in :mod:`bot4.gateways.order_entry`; the
restart (``restart_after``, ``restart_pause``) in :mod:`bot4.gateways.exchange`. The module
doc of :mod:`bot4.gateways.exchange` says what each one does.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Faults:
    drop_every: int = 0
    duplicate_every: int = 0
    reorder_every: int = 0
    delay_ms: float = 0.0
    rerequest_delay_ms: float = 0.0  # answer each re-request this much later
    disconnect_after: int = 0
    disconnect_random: int = 0  # cut each connection after 1..N sequenced messages (seeded)
    seed: int = 0
    refuse_login: bool = False
    restart_after: float = 0.0  # s after serving starts: go down and come back (0: never)
    restart_pause: float = 1.0  # s down
    bust_every: int = 0  # break every k-th execution (Broken Trade after its Executed)
    bust_fills: tuple = ()  # break the n-th executions of the day (1-based)
    bust_matches: tuple = ()  # break the executions with these match numbers

    def __post_init__(self) -> None:
        self._rng = np.random.default_rng(self.seed)

    def cut_after(self) -> int:
        """Sequenced messages a new OUCH connection gets before it is cut (0: never)."""
        if self.disconnect_random > 0:
            return int(self._rng.integers(1, self.disconnect_random + 1))
        return self.disconnect_after
