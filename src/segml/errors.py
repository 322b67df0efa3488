"""Exception types a user can act on.

Every error that reaches the CLI is one of these: the CLI prints ``str(err)`` as a single line and exits
non-zero, so messages must name the file, the column and the count that went wrong.
"""

from __future__ import annotations


class SegmlError(Exception):
    """Base class of every error segml reports to a user (CLI exit code 2)."""


class ConfigError(SegmlError):
    """The experiment YAML is malformed: unknown key, wrong type, missing required value."""


class InputFileError(SegmlError):
    """An input data file is missing, unreadable, empty, or lacks/mistypes a mapped column."""


class ChecksumError(SegmlError):
    """A shipped data file or artifact file does not match its recorded SHA-256."""
