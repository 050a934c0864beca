"""The simulated venue: limit order books matching our orders against other participants'
liquidity from market data, with acknowledgement latency and fees.

The kernels (called in-process by a replay, and by the ``venue`` stage,
:class:`bot4.stages.venue.VenueStage`) take one state object, :data:`VenueState`
(``layout``), and live by what they do: ``book`` (slots, levels, queues, id maps),
``queue_model``, ``reports`` (and the delay queue), ``match`` (matching, self-trade
prevention), ``orders`` (our orders), ``feed`` (market data). :mod:`~bot4.venue.matching`
holds the :class:`~bot4.venue.matching.Venue` wrapper and re-exports the public names.
"""

from bot4.venue.matching import (
    STATS,
    Venue,
    queue_model_requeue,
    venue_cancel_all_kernel,
    venue_md_kernel,
    venue_order_kernel,
    venue_release_kernel,
)

__all__ = [
    "STATS",
    "Venue",
    "queue_model_requeue",
    "venue_cancel_all_kernel",
    "venue_md_kernel",
    "venue_order_kernel",
    "venue_release_kernel",
]
