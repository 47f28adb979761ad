"""Our exception types: each message should tell a user what to change."""


class JobError(Exception):
    """Base of every error the job reports to a user (the CLI prints it without a traceback)."""


class CodecError(JobError, ValueError):
    """Bytes that are not valid RecordIO-protobuf, or arrays that cannot be encoded."""


class ConfigError(JobError, ValueError):
    """A configuration key or value that cannot be used."""


class InputError(JobError, ValueError):
    """Input data that does not fit the selection or the predictor type."""


class StorageError(JobError):
    """A destination that cannot be written, listed or committed."""


class TrainingError(JobError):
    """A training request that would fail, or a training job that did."""
