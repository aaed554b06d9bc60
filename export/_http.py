"""A JSON POST over HTTP whose timeout bounds the whole call, for the serving client."""

import http.client
import socket
import threading
import time
import urllib.parse


def post(url, payload, timeout):
    """(status, body) of a JSON POST to `url`, all of it within `timeout` seconds.

    A socket timeout bounds each read only: a server sending a byte a second would never
    trip it. So once connected, a timer shuts the socket down at the deadline, which ends
    whatever read is waiting.
    """
    deadline = time.monotonic() + timeout
    parts = urllib.parse.urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        connection.connect()
    except OSError as error:
        connection.close()
        raise ConnectionError(f"cannot reach TF Serving at {url}: "
                              f"{error.strerror or error}") from None
    expired = threading.Event()
    watchdog = threading.Timer(max(deadline - time.monotonic(), 0.0), _cut,
                               (connection.sock, expired))
    watchdog.start()
    try:
        connection.request("POST", parts.path, body=payload,
                           headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        return response.status, response.read()
    except (OSError, http.client.HTTPException) as error:
        if expired.is_set():
            raise TimeoutError(f"TF Serving at {url} did not answer within {timeout:g} s") \
                from None
        raise ConnectionError(f"TF Serving at {url} broke off: "
                              f"{type(error).__name__}: {error}") from None
    finally:
        watchdog.cancel()
        connection.close()


def _cut(sock, expired):
    """The watchdog: mark the call expired and end its waiting read."""
    expired.set()
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:  # already closed: the call ended at the deadline anyway
        pass
