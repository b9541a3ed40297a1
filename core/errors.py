"""The errors a user can cause. Each carries one line meant for a human.

Front ends map every ``LanewardenError`` to a clear message (exit status 2 on the
CLI, an ephemeral reply in chat); anything else is a bug and is logged with its
traceback.
"""


class LanewardenError(Exception):
    """Bad input or a refused operation; the board is unchanged."""

    exit_code = 2

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class ConfigError(LanewardenError):
    """The configuration file cannot be read or is invalid."""


class UsageError(LanewardenError):
    """A malformed command: unknown verb, bad flag, bad value."""


class NotFound(LanewardenError):
    """An unknown task id, window, profile, gateway, ..."""


class Conflict(LanewardenError):
    """The operation is not legal in the current state (illegal move, cycle, ...)."""


class AccessDenied(LanewardenError):
    """The actor's role does not allow the command."""
