"""The one exception type for mistakes a user can make and fix."""


class RLTuneError(Exception):
    """A problem with the user's input (recipe, data, model path, checkpoint).

    The message always says what to fix, and never shows a secret read from `${env:NAME}`.
    """

    def __str__(self) -> str:
        from rltune.secrets import redact

        return redact(super().__str__())


class ConfigError(RLTuneError):
    """A recipe that does not validate: unknown key, wrong type, bad value."""


class Stopped(RLTuneError):
    """The run stopped on a signal after saving a checkpoint; `exit_code` is 128 + the signal number."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code
