"""Every error lora-tracker raises on purpose. The CLI turns these into one-line messages."""

from __future__ import annotations


class LoraTrackerError(Exception):
    """Base class: a problem the user can act on. Its message is one readable line."""

    exit_code = 1


class ConfigurationError(LoraTrackerError):
    """The database target or data folder is unusable as configured."""


class DatabaseUnavailable(LoraTrackerError):
    """The database could not be reached (server down, wrong host, bad credentials)."""


class EmbeddedServerError(DatabaseUnavailable):
    """The embedded PostgreSQL server could not be started."""


class SchemaNotInitialized(LoraTrackerError):
    """The target database has no lora-tracker schema, or an older one."""


class MigrationError(LoraTrackerError):
    """A migration file failed to apply; nothing of it was kept."""


class InvalidInput(LoraTrackerError):
    """A value broke a rule of the data model (range, enumeration, format)."""


class NotFound(LoraTrackerError):
    """A run, epoch, caption version or prompt that does not exist."""


class AlreadyExists(LoraTrackerError):
    """A unique name that is already taken."""


class AmbiguousName(LoraTrackerError):
    """A prefix that matches more than one run."""


class SQLError(LoraTrackerError):
    """A statement given to `lora-tracker sql` failed on the server."""


class InvalidRequest(InvalidInput):
    """A request that contradicts itself or asks for too little (a flag both set and
    cleared, the same run named twice): a usage error, exit 2 at the CLI."""

    exit_code = 2


class InvalidValue(InvalidRequest):
    """One given value is malformed; ``field`` names it, so a front end can point at its
    input (the CLI names the option)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class FlagConflict(InvalidRequest):
    """The same epoch flag both set and cleared in one score; ``flags`` lists them."""

    def __init__(self, flags: list[str]) -> None:
        super().__init__(f"flags both set and cleared: {', '.join(flags)}")
        self.flags = flags
