"""The exporter's pages as one WSGI app: ``/metrics`` from prometheus_client, ``/healthz`` and ``/``.

``/metrics`` is prometheus_client's ``make_wsgi_app`` over the exporter's registry, so content
negotiation (text 0.0.4, OpenMetrics), gzip and ``name[]`` filtering are the library's. In front of it:
basic auth from the web config, an Accept-Encoding that honours ``gzip;q=0`` (the library would
compress anyway), and, for the two formats Prometheus negotiates, the answer rendered by the fast
renderer in ``exposition`` instead of ``generate_latest`` (same bytes, same headers; the library still
chooses the format and still serves every other request). ``/healthz`` is exempt from basic auth so
that the kubelet's probe needs no password; it tells only whether collection works.
"""

from __future__ import annotations

import gzip
import html
import logging
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qs

import prometheus_client.exposition as library
import prometheus_client.openmetrics.exposition as library_openmetrics
from prometheus_client import CollectorRegistry, make_wsgi_app

from krakenplug.exporter.exposition import TextRenderer
from krakenplug.exporter.families import Family
from krakenplug.exporter.webconfig import WebSecurity

__all__ = ["make_app"]

logger = logging.getLogger(__name__)

_TEXT = "text/plain; charset=utf-8"
StartResponse = Callable[..., Any]


def make_app(registry: CollectorRegistry, *, health: Callable[[], tuple[bool, str]], title: str,
             security: Callable[[], WebSecurity] = WebSecurity,
             families: Callable[[], list[Family]] | None = None) -> Callable[[dict[str, Any], StartResponse],
                                                                              Iterable[bytes]]:
    """The app; ``families`` (the collector's ``scrape``) enables the fast renderer for ``registry``'s pages."""
    metrics = make_wsgi_app(registry)
    fast = _FastMetrics(families) if families is not None else None
    landing = _landing_page(title)

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        current = security()
        extra = list(current.headers)
        path = environ.get("PATH_INFO", "")

        def respond(status: str, body: bytes, content_type: str = _TEXT,
                    headers: Iterable[tuple[str, str]] = ()) -> list[bytes]:
            start_response(status, [("Content-Type", content_type), *headers, *extra])
            return [body]

        try:
            if path != "/healthz" and current.auth and not current.auth.check(environ.get("HTTP_AUTHORIZATION")):
                return respond("401 Unauthorized", b"Unauthorized\n",
                               headers=[("WWW-Authenticate", 'Basic realm="krakenplug", charset="UTF-8"')])
            if path == "/metrics":
                environ["HTTP_ACCEPT_ENCODING"] = _without_refused(environ.get("HTTP_ACCEPT_ENCODING", ""))
                rendered = fast.answer(environ) if fast is not None else None
                if rendered is not None:
                    content_type, encoding, body = rendered
                    return respond("200 OK", body, content_type, headers=encoding)
                answer: Iterable[bytes] = metrics(
                    environ, lambda status, headers, *exc: start_response(status, [*headers, *extra], *exc))
                return answer
            if environ.get("REQUEST_METHOD") != "GET":
                return respond("405 Method Not Allowed", b"only GET is served\n", headers=[("Allow", "GET")])
            if path == "/healthz":
                ok, reason = health()
                return respond("200 OK" if ok else "503 Service Unavailable", (reason + "\n").encode())
            if path == "/":
                return respond("200 OK", landing, "text/html; charset=utf-8")
            return respond("404 Not Found", f"no such page: {path}; try /metrics\n".encode())
        except Exception as err:  # the HTTP boundary: a bug costs one answer, not the server
            logger.exception("serving %s failed", path)
            return respond("500 Internal Server Error", f"internal error: {err}\n".encode())

    return app


class _FastMetrics:
    """The answer to a plain GET in text or OpenMetrics 1.0.0, as prometheus_client would give it."""

    def __init__(self, families: Callable[[], list[Family]]) -> None:
        self._families = families
        self._text = TextRenderer()
        self._openmetrics = TextRenderer(openmetrics=True)

    def answer(self, environ: dict[str, Any]) -> tuple[str, list[tuple[str, str]], bytes] | None:
        """(content type, encoding headers, body), or None to leave the request to the library."""
        if environ.get("REQUEST_METHOD") != "GET" or "name[]" in parse_qs(environ.get("QUERY_STRING", "")):
            return None
        encoder, content_type = library.choose_encoder(environ.get("HTTP_ACCEPT", ""))
        renderer = self._renderer_for(encoder)
        if renderer is None:
            return None
        body = renderer.render(self._families())
        if library.gzip_accepted(environ.get("HTTP_ACCEPT_ENCODING", "")):
            return content_type, [("Content-Encoding", "gzip")], gzip.compress(body)
        return content_type, [], body

    def _renderer_for(self, encoder: Callable[..., bytes]) -> TextRenderer | None:
        # Our metric and label names are all legacy-valid, so the escaping schemes give the same bytes.
        function = getattr(encoder, "func", encoder)
        if function is library.generate_latest:
            return self._text
        if function is library_openmetrics.generate_latest and getattr(encoder, "keywords", {}).get("version") \
                == "1.0.0":
            return self._openmetrics
        return None


def _without_refused(accept_encoding: str) -> str:
    """Drops codings the client refuses with ``q=0`` (prometheus_client looks only at the names)."""
    kept = []
    for part in accept_encoding.split(","):
        _, _, params = part.partition(";")
        quality = params.replace(" ", "").lower()
        if quality.startswith("q=") and _is_zero(quality[2:]):
            continue
        kept.append(part.strip())
    return ", ".join(part for part in kept if part)


def _is_zero(quality: str) -> bool:
    try:
        return float(quality) == 0.0
    except ValueError:
        return False


def _landing_page(title: str) -> bytes:
    name = html.escape(title)
    return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{name}</title></head>\n"
            f"<body><h1>{name}</h1>\n<ul>\n"
            "<li><a href=\"/metrics\">/metrics</a>: Prometheus metrics of this node's accelerators</li>\n"
            "<li><a href=\"/healthz\">/healthz</a>: 200 while the last collection succeeded recently</li>\n"
            "</ul></body></html>\n").encode()
