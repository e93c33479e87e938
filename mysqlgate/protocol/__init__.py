"""The MySQL client/server protocol without I/O: bytes in, messages out, bytes back.

Nothing in this package imports asyncio or touches a socket; the frontend and
backend modules feed it bytes and write what it returns.
"""
