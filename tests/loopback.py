"""A test's own HTTP server on 127.0.0.1, served from a thread for as long as the test needs it."""

from __future__ import annotations

import contextlib
import threading
from socketserver import BaseServer


@contextlib.contextmanager
def serving(server: BaseServer):
    """Serves `server` in a daemon thread; shuts it down and closes its socket afterwards."""
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
