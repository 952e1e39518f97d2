"""The training room's errors, importable without torch (the CLI names them for every command)."""


class TrainError(ValueError):
    """A training run that cannot start or continue as asked; the message says why."""


class DataError(TrainError):
    """Shards that cannot be trained on (none found, empty, unreadable)."""


class ModelError(TrainError):
    """A model or pretrained weights that cannot be had."""
