"""Records: every record dtype, the fixed-point helpers, the instrument table and the one
error taxonomy. The lowest layer of bot4: depends on numpy only.

Modules: :mod:`~bot4.records.dtypes` (record layouts, kind constants),
:mod:`~bot4.records.types` (record-type ids, the types by name, layout fingerprints),
:mod:`~bot4.records.fixed` (Decimal <-> int64 units),
:mod:`~bot4.records.instruments` (instrument table, TOML loading), and
:mod:`~bot4.records.errors` (``Code``, ``Bot4Error``).
"""

from bot4.records.dtypes import *  # noqa: F403
from bot4.records.dtypes import __all__ as _dtypes_all
from bot4.records.errors import *  # noqa: F403
from bot4.records.errors import __all__ as _errors_all
from bot4.records.fixed import *  # noqa: F403
from bot4.records.fixed import __all__ as _fixed_all
from bot4.records.instruments import *  # noqa: F403
from bot4.records.instruments import __all__ as _instruments_all
from bot4.records.types import *  # noqa: F403
from bot4.records.types import __all__ as _types_all

__all__ = [*_dtypes_all, *_types_all, *_errors_all, *_fixed_all, *_instruments_all]
