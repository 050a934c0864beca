"""The simulated venue: limit order books matching our orders against other participants'
liquidity from market data, with acknowledgement latency and fees.

:mod:`~bot4.venue.matching` holds the state layout, the kernels (called in-process by a
replay, and by the ``venue`` stage, :class:`bot4.stages.venue.VenueStage`) and the
:class:`~bot4.venue.matching.Venue` wrapper.
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
