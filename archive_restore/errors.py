"""Small, specific exceptions. The CLI (``archive_restore.cli``) is the one place they become messages and exit codes."""


class ArchiveRestoreError(Exception):
    """Base class: anything the user can act on. The message says what happened and what to do."""

    exit_code = 1


class UsageError(ArchiveRestoreError):
    """The command line or its options make no sense together."""

    exit_code = 2


class InputError(ArchiveRestoreError):
    """An input file cannot be used (missing, unreadable, not an image or video, too large...)."""


class ImageTooLargeError(InputError):
    """The image header claims more pixels than the configured limit; refused before decoding."""


class UnsupportedFormatError(InputError):
    """The file's format or codec is not supported."""


class CheckpointError(ArchiveRestoreError):
    """A checkpoint file is missing, corrupt, or describes an unknown architecture."""


class ModelNotFoundError(CheckpointError):
    """A model file is not present in any models directory."""


class DownloadError(ArchiveRestoreError):
    """A model download failed or its checksum did not match."""


class JobError(ArchiveRestoreError):
    """The job store refused an operation (unknown job, inconsistent state)."""


class JobLockedError(JobError):
    """Another process is working on the same job."""


class DeviceError(ArchiveRestoreError):
    """The requested device (e.g. cuda) is not available."""


class DataError(ArchiveRestoreError):
    """Training or benchmark data is missing or empty."""


class DiskFullError(ArchiveRestoreError):
    """No space left on the device holding the output or the job folder. The job stopped at the first
    full write, with nothing half-written; the same command carries on once there is room."""


class DatabaseError(JobError):
    """The job database cannot be used as it is."""


class DatabaseDamagedError(DatabaseError):
    """The job database file is corrupt or truncated; ``archive-restore jobs --repair`` salvages it."""


class DatabaseBusyError(DatabaseError):
    """Another program kept the job database locked for longer than the store waits."""


class ClusterError(ArchiveRestoreError):
    """``--executor ray`` cannot run: Ray is not installed, the cluster cannot be reached, or a worker
    cannot reach the job's files (the message names the node)."""


class WorkerError(ArchiveRestoreError):
    """An item failed on a cluster worker with an error that could not be sent back as it was."""
