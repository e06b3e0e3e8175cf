"""Errors every layer may raise; each message names what is wrong and where."""


class BadSample(ValueError):
    """A data row that cannot be used; the message names the row and what is wrong."""


class ConfigError(ValueError):
    """A configuration value is unknown, mistyped or inconsistent; the message says which."""
