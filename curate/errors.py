"""Errors curate raises on purpose. Each carries an exit code for the CLI.

* :class:`ConfigError` (exit 2): bad pipeline, unknown key, missing file -
  raised before any compute, with a message saying how to fix it.
* :class:`StageError` (exit 1): a runtime failure, naming stage and partition.
* :class:`ClusterError` (exit 1): the Dask scheduler was lost mid-run; rerun to resume.
"""

from __future__ import annotations


class CurateError(Exception):
    """Base class: a failure with a message meant for the user."""

    exit_code = 1


class ConfigError(CurateError):
    """The pipeline or a command-line value is wrong; nothing was computed."""

    exit_code = 2


class SchemaError(CurateError):
    """A table does not match its declared schema."""


class RunLockedError(CurateError):
    """Another curate run holds the run directory."""

    exit_code = 3


class ClusterError(CurateError):
    """The Dask cluster failed under the run (scheduler lost); finished partitions are kept (exit 1)."""


class StageError(CurateError):
    """A stage failed at run time on one partition."""

    def __init__(self, stage: str, partition: str, message: str):
        self.stage, self.partition = stage, partition
        super().__init__(f"stage '{stage}' failed on partition '{partition}': {message}")


class SampleError(Exception):
    """One sample is unusable; the stage's ``on_error`` policy decides what happens.

    ``reason`` is a short machine-readable key (``truncated``, ``nan_values`` ...),
    ``detail`` a human sentence.
    """

    def __init__(self, reason: str, detail: str = ""):
        self.reason, self.detail = reason, detail
        super().__init__(f"{reason}: {detail}" if detail else reason)
