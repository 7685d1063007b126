"""Errors raised by `pokedge sync`; each reaches the user as one line."""

from pokedge.errors import PokedgeError


class SyncError(PokedgeError):
    """A sync, rollback or version operation that failed; the active version is left as it was."""


class ConfigError(SyncError):
    """A sync setting from the config file, the environment or a flag that is invalid."""


class ManifestError(SyncError):
    """A project manifest that is missing, malformed or names something unusable."""


class UnsafeKeyError(ManifestError):
    """An object key or local path from the manifest that could escape the project or the versions folder."""


class TransferError(SyncError):
    """A download that failed after its retries, or an S3 request that was rejected."""


class ChecksumError(SyncError):
    """A downloaded file whose size, sha256 or ETag differs from what the manifest or server states."""


class DiskSpaceError(SyncError):
    """Not enough free space in the data folder for the files to download."""


class ValidationError(SyncError):
    """A staged version whose model or gallery cannot be used."""


class VersionError(SyncError):
    """A versions folder, pointer or version.json that is missing or damaged."""


class LockError(SyncError):
    """Another sync or rollback holds the data folder's lock."""
