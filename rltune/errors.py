"""The one exception type for mistakes a user can make and fix."""


class RLTuneError(Exception):
    """A problem with the user's input (recipe, data, model path, checkpoint).

    The message always says what to fix.
    """


class ConfigError(RLTuneError):
    """A recipe that does not validate: unknown key, wrong type, bad value."""
