"""Pure unit tests of the sans-IO code: no sockets, no server."""
