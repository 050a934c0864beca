"""Average-cost position accounting: the rule is :mod:`bot4.records.accounting` (one rule
for the risk kernels, the trading report and the database loader, below all of them);
re-exported here for the risk package."""

from __future__ import annotations

from bot4.records.accounting import average_cost_fill, pro_rata

__all__ = ["average_cost_fill", "pro_rata"]
