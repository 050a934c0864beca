"""bot4's version: the package root offers it as ``bot4.__version__``; modules below the
tools, which do not import the root (docs/ARCHITECTURE.md), read it here."""

__version__ = "0.1.0"
