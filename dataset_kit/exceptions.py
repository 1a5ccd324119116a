"""The one rooted error hierarchy of dataset_kit.

Every error the library raises on purpose derives from :class:`DatasetKitError`, so a
caller can catch everything of ours with one ``except`` and let real bugs surface.
Several classes also derive from the builtin a caller would naturally catch
(``KeyError``, ``FileExistsError``, ``ValueError``, ``LookupError``).

::

    DatasetKitError
    ├── StoreError                         a blob store operation failed
    │   ├── KeyNotFoundError (KeyError)    the key does not exist
    │   ├── KeyExistsError (FileExistsError)   create-only put lost: the key exists
    │   ├── PreconditionFailedError        compare-and-swap lost: the etag changed
    │   ├── InvalidKeyError (ValueError)   the key is malformed or escapes the store root
    │   ├── UnsupportedOperationError (NotImplementedError)   the backend cannot do it
    │   └── StoreUnavailableError          transient failure (retried before it surfaces)
    ├── DatasetError                       a dataset is missing, broken or mismatched
    │   ├── DatasetNotFoundError (LookupError)
    │   ├── DatasetExistsError
    │   ├── VersionNotFoundError (LookupError)
    │   ├── MetadataFormatError (ValueError)   corrupt, truncated or unknown-version metadata
    │   ├── SchemaMismatchError (ValueError)   incompatible schema, names column and types
    │   ├── DataBlobMissingError               metadata references a blob that is gone
    │   ├── DataBlobCorruptError               a referenced blob is not readable Parquet
    │   └── CopyIncompleteError                a backup/restore could not copy every blob
    ├── InvalidInputError (ValueError)     bad arguments or data passed by the caller
    │   ├── InvalidUUIDError               dataset uuid with illegal characters
    │   ├── PredicateError                 unknown column/operator or value of the wrong type
    │   ├── PartitionValueError            null or unencodable partition value
    │   └── DeleteScopeError               delete_scope on an unknown or non-indexed column
    ├── CommitError                        a commit did not happen
    │   ├── CommitConflictError            another writer changed what this commit depends on
    │   └── CommitStateUnknownError        the commit may or may not have happened
    ├── SourceError                        reading an external source (database, files) failed
    │   ├── SourceConnectionError          cannot connect or authenticate (or the link dropped)
    │   ├── SourceQueryError               the source rejected the query (unknown table, syntax)
    │   └── SourceFormatError              malformed input data (names the file and line)
    └── ConfigError (ValueError)           invalid configuration or store URL

Warnings derive from :class:`DatasetKitWarning`.
"""

from __future__ import annotations

__all__ = [
    "CommitConflictError",
    "CommitError",
    "CommitStateUnknownError",
    "ConfigError",
    "CopyIncompleteError",
    "DataBlobCorruptError",
    "DataBlobMissingError",
    "DatasetError",
    "DatasetExistsError",
    "DatasetKitError",
    "DatasetKitWarning",
    "DatasetNotFoundError",
    "DeleteScopeError",
    "InvalidInputError",
    "InvalidKeyError",
    "InvalidUUIDError",
    "KeyExistsError",
    "KeyNotFoundError",
    "MetadataFormatError",
    "PartitionValueError",
    "PreconditionFailedError",
    "PredicateError",
    "SchemaMismatchError",
    "SourceConnectionError",
    "SourceError",
    "SourceFormatError",
    "SourceQueryError",
    "StoreError",
    "StoreUnavailableError",
    "UnsafeCommitWarning",
    "UnsupportedOperationError",
    "VersionNotFoundError",
]


class DatasetKitError(Exception):
    """Root of every error raised by dataset_kit."""


# --------------------------------------------------------------------------- store
class StoreError(DatasetKitError):
    """A blob store operation failed.

    Attributes
    ----------
    key
        The key the operation was about, if any.
    """

    def __init__(self, message: str, *, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key

    def __reduce__(self) -> tuple[object, ...]:  # keep ``key`` across pickling (dask)
        return (_rebuild_keyed, (type(self), str(self.args[0]) if self.args else "", self.key))


def _rebuild_keyed(cls: type[StoreError], message: str, key: str | None) -> StoreError:
    return cls(message, key=key)


class KeyNotFoundError(StoreError, KeyError):
    """The key does not exist in the store."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class KeyExistsError(StoreError, FileExistsError):
    """A create-only put found the key already present."""


class PreconditionFailedError(StoreError):
    """A compare-and-swap put or delete found a different etag."""


class InvalidKeyError(StoreError, ValueError):
    """The key is malformed or would escape the store root."""


class UnsupportedOperationError(StoreError, NotImplementedError):
    """The backend cannot perform this operation (see ``Store.capabilities``)."""


class StoreUnavailableError(StoreError):
    """A transient failure: the operation may succeed when retried."""


# --------------------------------------------------------------------------- datasets
class DatasetError(DatasetKitError):
    """A dataset is missing, broken or does not match the request."""


class DatasetNotFoundError(DatasetError, LookupError):
    """No dataset with this uuid exists in the store."""


class DatasetExistsError(DatasetError):
    """A dataset with this uuid already exists (and ``mode="error"`` was asked)."""


class VersionNotFoundError(DatasetError, LookupError):
    """The requested version of a dataset does not exist or is not retained."""


class MetadataFormatError(DatasetError, ValueError):
    """Dataset metadata is corrupt, truncated or of an unsupported format version."""


class SchemaMismatchError(DatasetError, ValueError):
    """Data does not match the dataset schema; the message names column and types."""


class DataBlobMissingError(DatasetError):
    """Dataset metadata references a blob that does not exist in the store."""


class DataBlobCorruptError(DatasetError):
    """A data blob the metadata references is not readable Parquet (truncated,
    overwritten by something else, damaged); ``verify(deep=True)`` finds every such blob."""


class CopyIncompleteError(DatasetError):
    """A backup/restore could not copy every blob; the target was left unchanged.

    Attributes
    ----------
    failed
        Target key -> error text, for every blob that could not be copied.
    """

    def __init__(self, message: str, *, failed: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.failed = dict(failed or {})


# --------------------------------------------------------------------------- input
class InvalidInputError(DatasetKitError, ValueError):
    """The caller passed invalid arguments or data."""


class InvalidUUIDError(InvalidInputError):
    """A dataset uuid contains characters outside ``[A-Za-z0-9_+-]``."""


class PredicateError(InvalidInputError):
    """A predicate names an unknown column or operator, or a value of the wrong type."""


class PartitionValueError(InvalidInputError):
    """A partition column holds a null or an unencodable value."""


class DeleteScopeError(InvalidInputError):
    """A ``delete_scope`` names an unknown or non-indexed column."""


# --------------------------------------------------------------------------- commits
class CommitError(DatasetKitError):
    """A commit did not happen; the dataset stays at its last committed version."""


class CommitConflictError(CommitError):
    """Another writer committed a change that this commit depends on."""


class CommitStateUnknownError(CommitError):
    """The commit may or may not have happened (e.g. a timeout on the snapshot write).

    The blobs written for it are kept; reading the dataset tells which is the case.
    """


# --------------------------------------------------------------------------- other
class SourceError(DatasetKitError):
    """Reading an external source (a database, input files) failed."""


class SourceConnectionError(SourceError):
    """The source cannot be reached or refused the credentials (the message never shows them).

    Transient failures (refused or dropped connections) are retried before this surfaces.
    """


class SourceQueryError(SourceError):
    """The source rejected the query: unknown table or column, bad SQL, no permission."""


class SourceFormatError(SourceError):
    """Input data is malformed (a bad JSON or CSV line); the message names file and line.

    Attributes
    ----------
    path
        The input file, if known.
    line
        The 1-based line number in that file, if known.
    """

    def __init__(self, message: str, *, path: str | None = None, line: int | None = None) -> None:
        super().__init__(message)
        self.path = path
        self.line = line

    def __reduce__(self) -> tuple[object, ...]:  # keep path and line across pickling (dask)
        return (type(self), (str(self.args[0]) if self.args else "",), self.__dict__)


class ConfigError(DatasetKitError, ValueError):
    """Invalid configuration, store URL or option."""


class DatasetKitWarning(UserWarning):
    """Root of every warning emitted by dataset_kit."""


class UnsafeCommitWarning(DatasetKitWarning):
    """Commits run on a store without atomic create-only writes (explicit opt-in)."""
