"""Errors of the embedded servers."""


class EmbeddedError(Exception):
    """An embedded server could not be found, started or stopped."""


class AddressInUseError(EmbeddedError):
    """Another process took the port before the server could bind it."""
