"""Serves the web page and its API from a thread of the gateway process (stdlib HTTP server)."""

from __future__ import annotations

import logging
import ssl
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from labsight.config import Settings, env_int
from labsight.web import DEFAULT_WEB_PORT, WEB_PORT_ENV
from labsight.web.api import Reply, WebApi, error_reply

log = logging.getLogger(__name__)


@dataclass
class WebServer:
    """A running web page: its HTTP server and the thread serving it."""

    httpd: ThreadingHTTPServer
    thread: threading.Thread
    scheme: str = "http"

    @property
    def port(self) -> int:
        """The bound port."""
        return int(self.httpd.server_address[1])

    @property
    def url(self) -> str:
        """The page's address on this machine."""
        return f"{self.scheme}://127.0.0.1:{self.port}/"

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


def handler_for(api: WebApi) -> type[BaseHTTPRequestHandler]:
    """A request handler class that answers every request with ``api``."""

    class Handler(BaseHTTPRequestHandler):
        server_version = "LabSight"
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:  # noqa: N802 - the name http.server calls
            self._answer(api.handle("GET", self.path, self.headers, b""))

        def do_POST(self) -> None:  # noqa: N802 - the name http.server calls
            try:
                length = int(self.headers.get("Content-Length") or 0)
            except ValueError:
                length = -1
            if length < 0 or length > api.max_body_bytes:
                self.close_connection = True
                self._answer(error_reply(413, f"request: Content-Length {self.headers.get('Content-Length')}"
                                         f" is not a size up to the page's limit of {api.max_body_bytes} "
                                         "bytes; submit large files with `labsight submit`",
                                         "INVALID_ARGUMENT"))
                return
            self._answer(api.handle("POST", self.path, self.headers, self.rfile.read(length)))

        def _answer(self, reply: Reply) -> None:
            self.send_response(reply.status)
            self.send_header("Content-Type", reply.content_type)
            self.send_header("Content-Length", str(len(reply.body)))
            self.send_header("X-Content-Type-Options", "nosniff")
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(reply.body)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - http.server's name
            log.debug("web %s", format % args)

    return Handler


def start_web_server(api: WebApi, host: str = "127.0.0.1", port: int = 0,
                     tls_cert: str = "", tls_key: str = "") -> WebServer:
    """Serve ``api`` and the page on ``host:port`` (0: a free port) from a daemon thread; HTTPS
    with ``tls_cert`` and ``tls_key`` (the gateway's PEM files), else HTTP."""
    httpd = ThreadingHTTPServer((host, port), handler_for(api))
    httpd.daemon_threads = True
    scheme = "http"
    if tls_cert and tls_key:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(tls_cert, tls_key)
        httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
        scheme = "https"
    thread = threading.Thread(target=httpd.serve_forever, name="labsight-web", daemon=True)
    thread.start()
    return WebServer(httpd, thread, scheme)


def serve_web_page(settings: Settings) -> WebServer | None:
    """Start the gateway's web page on $LABSIGHT_WEB_PORT (default 9449; -1: none), calling the
    gateway's gRPC port on loopback; None when it is off or its port cannot be bound (the gRPC
    API serves on regardless). A gateway on a free port (``settings.port`` 0, as in tests)
    serves no page: the page could not know where to call it."""
    port = env_int(WEB_PORT_ENV, DEFAULT_WEB_PORT)
    if port < 0 or settings.port == 0:
        return None
    tls = bool(settings.tls_cert and settings.tls_key)
    api = WebApi(f"{'localhost' if tls else '127.0.0.1'}:{settings.port}",
                 tls_ca=settings.tls_cert if tls else None,
                 max_body_bytes=settings.max_message_bytes * 2)
    try:
        server = start_web_server(api, settings.host, port, settings.tls_cert, settings.tls_key)
    except OSError as error:
        log.error("web page not served: cannot bind %s:%s (%s); set %s to a free port or -1",
                  settings.host, port, error, WEB_PORT_ENV)
        return None
    log.info("web page", extra={"url": server.url})
    return server
