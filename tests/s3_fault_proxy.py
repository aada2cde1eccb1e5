"""An HTTP proxy on loopback in front of a real S3 server that fails requests on purpose.

Clients point their endpoint at the proxy; each request is forwarded to the server unless the proxy's
`policy` picks a fault for it: S3's own 503 SlowDown (throttling), a 500 InternalError, or a dropped
connection (a network that is down). The server never sees a failed request.
"""

from __future__ import annotations

import http.client
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

SLOWDOWN = (503, "SlowDown", "Please reduce your request rate.")
INTERNAL = (500, "InternalError", "We encountered an internal error. Please try again.")
DROP = "drop"  # close the connection without an answer

Fault = tuple[int, str, str] | str | None
Policy = Callable[[str, str], Fault]  # (method, path) -> the fault for this request, or None


@dataclass
class FaultProxy:
    upstream: str  # the real server, http://127.0.0.1:<port>
    policy: Policy = lambda method, path: None
    requests: list[tuple[str, str, Fault]] = field(default_factory=list)  # what came, what it got

    def __post_init__(self) -> None:
        upstream = urlsplit(self.upstream)
        host, port = upstream.hostname or "127.0.0.1", upstream.port
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:  # quiet
                pass

            def _relay(self) -> None:
                body = self._body()
                fault = proxy.policy(self.command, self.path)
                proxy.requests.append((self.command, self.path, fault))
                if fault == DROP:
                    self.close_connection = True
                    self.connection.close()
                    return
                if fault is not None:
                    assert isinstance(fault, tuple)
                    self._answer_error(*fault)
                    return
                connection = http.client.HTTPConnection(host, port, timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() != "transfer-encoding"}
                headers["Content-Length"] = str(len(body))
                connection.request(self.command, self.path, body=body, headers=headers)
                response = connection.getresponse()
                data = response.read()
                self.send_response(response.status, response.reason)
                head = self.command == "HEAD"  # its Content-Length is the object's, with no body
                for name, value in response.getheaders():
                    if name.lower() not in ("transfer-encoding", "connection") and (
                        head or name.lower() != "content-length"
                    ):
                        self.send_header(name, value)
                if not head:
                    self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                connection.close()

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    chunks = []
                    while size := int(self.rfile.readline().strip().split(b";")[0], 16):
                        chunks.append(self.rfile.read(size))
                        self.rfile.readline()
                    self.rfile.readline()
                    return b"".join(chunks)
                return self.rfile.read(int(self.headers.get("Content-Length", 0)))

            def _answer_error(self, status: int, code: str, message: str) -> None:
                xml = f"<Error><Code>{code}</Code><Message>{message}</Message></Error>".encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(xml)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(xml)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _relay

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def fail_first(count: int, fault: Fault, method: str | None = None) -> Policy:
    """The first `count` requests (of `method`, if given) get `fault`; the rest go through."""
    left = [count]
    lock = threading.Lock()

    def policy(request_method: str, path: str) -> Fault:
        with lock:
            if left[0] > 0 and method in (None, request_method):
                left[0] -= 1
                return fault
        return None

    return policy
