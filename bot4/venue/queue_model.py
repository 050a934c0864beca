"""The queue-position model of quote-mode books (hftbacktest keeps its queue models
apart likewise): where a quote order whose size changes at an unchanged price stands.
"""

from __future__ import annotations

from bot4.nbkit.hot import hot


@hot
def queue_model_requeue(old_qty, new_qty):
    """Queue-position model hook: does a quote order whose size changes at an unchanged
    price go to the back of its level (True) or keep its place (False)?

    The quote order stands for the whole displayed size at the top of one side; our orders
    behind it fill only once it has traded away. The default keeps its place on every
    change: a decrease is taken to come from ahead of ours (it would be, for a cancel at the
    front), an increase to join ahead of ours too (pessimistic: new orders really join
    behind). A probabilistic queue model (e.g. the share of a decrease that was ahead of
    ours growing with our position) plugs in here, or by splitting the quote order in two
    at our position. Order-level feeds need no model: positions are known exactly.
    """
    return False
