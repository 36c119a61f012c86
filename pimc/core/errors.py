"""Errors raised by pimc.

Every message names the file, URL or parameter at fault and says how to fix it, so users never
have to read a traceback from deep inside numpy or rasterio.
"""

from __future__ import annotations


class PimcError(Exception):
    """Base class of every error pimc raises on purpose."""


class ConfigError(PimcError, ValueError):
    """A parameter in ``params.yaml`` (or an override) is unknown or invalid."""


class DatasetNotFoundError(PimcError, FileNotFoundError):
    """A dataset folder or one of its files is missing."""


class DatasetCorruptError(PimcError, ValueError):
    """A dataset file exists but cannot be read or has the wrong shape/content."""


class ChecksumError(DatasetCorruptError):
    """A downloaded or placed file does not match its expected md5."""


class DownloadError(PimcError, OSError):
    """A download failed (network, HTTP status); the message names the URL."""


class InputError(PimcError, ValueError):
    """An array, tensor or file given to pimc has bad content (NaN, wrong shape, bad values).

    ``ConfigError`` is for configuration (params.yaml, overrides); this is for data.
    """


class UsageError(PimcError):
    """A command line was called wrongly (missing or conflicting flags); the CLI prints usage."""


class ModelNotFoundError(PimcError, LookupError):
    """A model URI or alias names nothing in the MLflow registry / store."""


class UntrustedModelError(PimcError, ValueError):
    """A logged model holds files that would run code on load (pickle); it is not loaded."""


class TrainingDivergedError(PimcError, FloatingPointError):
    """A training loss became NaN/inf: training stops at that step, before the weights change."""


class CommandError(PimcError, RuntimeError):
    """An external command (DVC) failed; the message holds the command and its output's tail."""
