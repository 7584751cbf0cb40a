"""Errors shared across the library."""


class ConfigError(ValueError):
    """A config value that cannot work, named by its key."""
