"""Protocol errors, typed by who broke the protocol."""


class ProtocolError(Exception):
    """Bytes that do not follow the MySQL protocol."""


class ProtocolViolation(ProtocolError):
    """The peer sent something malformed, oversized or out of order."""
