"""Sans-IO protocol rules: bytes in, events out; events in, bytes out.

Nothing under this package touches sockets, the event loop, clocks or logging.
"""
