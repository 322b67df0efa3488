"""segml — customer grading: ranked, explained, versioned A–E grades from raw transactions."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("segml")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0"

__all__ = ["__version__"]
