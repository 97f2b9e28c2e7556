"""Errors a user can act on: each names the file/field and what is wrong."""


class EmomatchError(Exception):
    """Base class of errors that the command line reports in one line and exits non-zero."""


class ConfigError(EmomatchError):
    pass


class StoreError(EmomatchError):
    pass


class DataError(EmomatchError):
    pass


class LockedError(EmomatchError):
    """Another process is writing the same store or run folder."""


class WriteError(EmomatchError):
    """An output could not be written (disk full, read-only or forbidden folder)."""


class WorkerError(EmomatchError):
    """A worker process died mid-run (killed, out of memory, a crash in native code)."""
