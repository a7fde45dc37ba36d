"""vecflow.fetch against a real HTTP server on 127.0.0.1 (started here) and fake-gcs-server: outcomes and
their reasons, retries, limits, redirects, the allowlist, bounded concurrency and the order of results."""

from __future__ import annotations

import hashlib
import importlib
import io
import logging
import socket
import sys
import threading
import typing
from collections import Counter
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from loopback import serving
from PIL import Image

from vecflow.config import ConfigError, FetchSettings
from vecflow.fetch import Allowlist, Fetched, fetch_images, refusal

FAST = 0.001  # backoff_s of the tests: retries do not wait

uses_server = pytest.mark.integration  # the tier of tests with a server on 127.0.0.1 (tests/conftest.py)


def _image(fmt: str, color=(200, 40, 40)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (16, 16), color).save(out, format=fmt)
    return out.getvalue()


JPEG, PNG = _image("JPEG"), _image("PNG")
HTML = b"<!DOCTYPE html><html><body>Sold out</body></html>"
BIG = JPEG + b"\0" * 50_000


class ImageServer(ThreadingHTTPServer):
    """Answers by path (see Handler.do_GET); counts requests per path and the requests in flight."""

    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), Handler)
        self.port = self.server_address[1]
        self.lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self.lock:
            self.hits: Counter[str] = Counter()
            self.in_flight = self.max_in_flight = 0

    def handle_error(self, request, client_address) -> None:
        pass  # a client that stops reading (too_large, a timeout) breaks the pipe: expected here


class Handler(BaseHTTPRequestHandler):
    server: ImageServer

    def log_message(self, format, *args) -> None:
        pass

    def answer(self, status: int, body: bytes = b"", content_type: str = "image/jpeg", length: bool = True, **headers):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        if length:
            self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        path = self.path
        with self.server.lock:
            self.server.hits[path] += 1
            hits = self.server.hits[path]
        if path.startswith("/many/"):
            # counted from the request to before the answer: inside the client's hold of its per-host slot
            with self.server.lock:
                self.server.in_flight += 1
                self.server.max_in_flight = max(self.server.max_in_flight, self.server.in_flight)
            threading.Event().wait(0.02)  # the server taking its time, so that requests overlap
            with self.server.lock:
                self.server.in_flight -= 1
            return self.answer(200, PNG, "image/png")
        if path == "/img.jpg":
            return self.answer(200, JPEG)
        if path == "/img.png":
            return self.answer(200, PNG, "image/png")
        if path == "/missing.jpg":
            return self.answer(404, b"not here", "text/plain")
        if path == "/gone.jpg":
            return self.answer(410, b"gone", "text/plain")
        if path == "/forbidden.jpg":
            return self.answer(403, b"no", "text/plain")
        if path == "/flaky.jpg":
            return self.answer(500, b"oops", "text/plain") if hits == 1 else self.answer(200, JPEG)
        if path == "/busy.jpg":
            return self.answer(429, b"slow down", "text/plain") if hits == 1 else self.answer(200, JPEG)
        if path == "/down.jpg":
            return self.answer(503, b"down", "text/plain")
        if path == "/slow.jpg":
            threading.Event().wait(1.0)  # longer than the tests' read timeout
            return self.answer(200, JPEG)
        if path == "/page.jpg":
            return self.answer(200, HTML)  # an HTML page, claiming to be a JPEG
        if path == "/big.jpg":
            return self.answer(200, BIG)
        if path == "/big-unsized.jpg":
            return self.answer(200, BIG, length=False)  # HTTP/1.0: the body ends when the connection closes
        if path == "/redirect.jpg":
            return self.answer(302, location="/img.png")
        if path == "/redirect-twice.jpg":
            return self.answer(301, location=f"http://127.0.0.1:{self.server.port}/redirect.jpg")
        if path == "/redirect-away.jpg":
            return self.answer(302, location="http://refused.invalid/x.jpg")
        if path == "/redirect-file.jpg":
            return self.answer(302, location="file:///etc/passwd")
        if path == "/redirect-userinfo.jpg":
            return self.answer(307, location=f"http://user:pw@127.0.0.1:{self.server.port}/img.jpg")
        if path == "/loop.jpg":
            return self.answer(302, location="/loop.jpg")
        return self.answer(404, b"unknown path", "text/plain")


@pytest.fixture(scope="module")
def image_server():
    with serving(ImageServer()) as server:
        yield server


@pytest.fixture
def server(image_server) -> ImageServer:
    image_server.reset()
    return image_server


SETTINGS = FetchSettings(
    allowed_hosts=("127.0.0.1:8080",),
    connect_timeout_s=2.0,
    read_timeout_s=2.0,
    attempts=3,
    max_bytes=10_000,
    concurrency=8,
    per_host=4,
)


@pytest.fixture
def fetch_settings(server) -> FetchSettings:
    return replace(SETTINGS, allowed_hosts=(f"127.0.0.1:{server.port}",))


def _url(server: ImageServer, path: str) -> str:
    return f"http://127.0.0.1:{server.port}{path}"


def _fetch_one(server, fetch_settings, path: str, **changes) -> Fetched:
    [result] = fetch_images([_url(server, path)], replace(fetch_settings, **changes), backoff_s=FAST)
    return result


# --- http(s) outcomes -------------------------------------------------------------------------------


@uses_server
def test_jpeg_and_png_are_fetched_with_their_md5(server, fetch_settings):
    uris = [_url(server, "/img.jpg"), _url(server, "/img.png")]
    jpeg, png = fetch_images(uris, fetch_settings, backoff_s=FAST)
    assert jpeg == Fetched(uris[0], JPEG, None, None, len(JPEG), hashlib.md5(JPEG).hexdigest())
    assert png.ok and png.data == PNG and png.bytes == len(PNG) and png.content_md5 == hashlib.md5(PNG).hexdigest()


@uses_server
@pytest.mark.parametrize("path, detail", [("/missing.jpg", "404 Not Found"), ("/gone.jpg", "410 Gone")])
def test_404_and_410_are_dead_links_not_retried(server, fetch_settings, path, detail):
    result = _fetch_one(server, fetch_settings, path)
    assert (result.reason, result.detail, result.data, result.bytes) == ("dead_link", detail, None, None)
    assert server.hits[path] == 1


@uses_server
def test_other_4xx_fail_without_retry(server, fetch_settings):
    result = _fetch_one(server, fetch_settings, "/forbidden.jpg")
    assert (result.reason, result.detail) == ("fetch_failed", "403 Forbidden")
    assert server.hits["/forbidden.jpg"] == 1


@uses_server
@pytest.mark.parametrize("path", ["/flaky.jpg", "/busy.jpg"])
def test_a_500_or_429_is_retried_and_then_fetched(server, fetch_settings, path):
    result = _fetch_one(server, fetch_settings, path)
    assert result.ok and result.data == JPEG
    assert server.hits[path] == 2


@uses_server
@pytest.mark.parametrize("attempts, after", [(1, "after 1 attempt"), (4, "after 4 attempts")])
def test_a_lasting_503_fails_after_every_attempt(server, fetch_settings, attempts, after):
    result = _fetch_one(server, fetch_settings, "/down.jpg", attempts=attempts)
    assert (result.reason, result.detail) == ("fetch_failed", f"503 Service Unavailable {after}")
    assert server.hits["/down.jpg"] == attempts


@uses_server
def test_a_read_timeout_is_retried_then_fails(server, fetch_settings):
    result = _fetch_one(server, fetch_settings, "/slow.jpg", read_timeout_s=0.3, attempts=2)
    assert (result.reason, result.detail) == ("fetch_failed", "timed out after 2 attempts")
    once = _fetch_one(server, fetch_settings, "/slow.jpg", read_timeout_s=0.3, attempts=1)
    assert once.detail == "timed out after 1 attempt"
    assert server.hits["/slow.jpg"] == 3


@uses_server
def test_a_refused_connection_is_retried_then_fails():
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings = replace(SETTINGS, allowed_hosts=(f"127.0.0.1:{port}",), attempts=2)
    [result] = fetch_images([f"http://127.0.0.1:{port}/img.jpg"], settings, backoff_s=FAST)
    assert result.reason == "fetch_failed"
    assert result.detail.startswith("connection failed") and result.detail.endswith("after 2 attempts")


@uses_server
def test_html_served_as_jpg_is_not_an_image(server, fetch_settings):
    result = _fetch_one(server, fetch_settings, "/page.jpg")
    assert result.reason == "not_an_image"
    assert "not a JPEG, PNG, GIF, WebP, BMP or TIFF image" in result.detail and "<!DOCTYPE html>" in result.detail


@uses_server
def test_a_body_over_the_limit_is_too_large_with_or_without_content_length(server, fetch_settings):
    sized = _fetch_one(server, fetch_settings, "/big.jpg")
    assert (sized.reason, sized.detail) == ("too_large", f"Content-Length {len(BIG)} is over the limit of 10000 bytes")
    unsized = _fetch_one(server, fetch_settings, "/big-unsized.jpg")
    assert (unsized.reason, unsized.detail) == ("too_large", "the body is over the limit of 10000 bytes")
    # the same bodies under a higher limit are read whole
    roomy = _fetch_one(server, fetch_settings, "/big-unsized.jpg", max_bytes=len(BIG))
    assert roomy.ok and roomy.bytes == len(BIG)


# --- redirects and the allowlist over http ------------------------------------------------------------


@uses_server
@pytest.mark.parametrize("path", ["/redirect.jpg", "/redirect-twice.jpg"])
def test_redirects_to_allowed_hosts_are_followed(server, fetch_settings, path):
    result = _fetch_one(server, fetch_settings, path)
    assert result.ok and result.data == PNG and result.uri == _url(server, path)
    assert server.hits["/img.png"] == 1


@uses_server
def test_a_redirect_to_a_refused_host_is_not_followed(server, fetch_settings):
    result = _fetch_one(server, fetch_settings, "/redirect-away.jpg")
    assert result.reason == "host_not_allowed"
    assert result.detail == (
        "redirect to http://refused.invalid/x.jpg: http://refused.invalid is not allowed "
        "(not in VECFLOW_FETCH_ALLOWED_HOSTS)"
    )


@uses_server
@pytest.mark.parametrize(
    "path, detail",
    [
        ("/redirect-file.jpg", "redirect to file:///etc/passwd: only http and https redirects are followed"),
        ("/redirect-userinfo.jpg", "credentials in the URI (user@host) are refused"),
    ],
)
def test_redirects_to_other_schemes_or_with_credentials_are_refused(server, fetch_settings, path, detail):
    result = _fetch_one(server, fetch_settings, path)
    assert result.reason == "host_not_allowed" and detail in result.detail
    assert "user:pw" not in result.detail  # credentials are not repeated in rejects (or logs)
    assert server.hits["/img.jpg"] == 0


@uses_server
def test_a_redirect_loop_stops_after_five_redirects(server, fetch_settings):
    result = _fetch_one(server, fetch_settings, "/loop.jpg")
    assert result.reason == "fetch_failed" and result.detail.startswith("more than 5 redirects")
    assert server.hits["/loop.jpg"] == 6  # the request and 5 redirects followed


@pytest.fixture
def no_dns(monkeypatch) -> list:
    """Records every name lookup, and refuses it (the allowlist must decide before any)."""
    lookups = []

    def refuse(host, *args, **kwargs):
        lookups.append(host)
        raise socket.gaierror(socket.EAI_NONAME, "lookups are refused in this test")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    return lookups


def test_a_refused_host_is_decided_without_dns_or_a_connection(no_dns):
    uris = ["http://metadata.invalid/latest", "https://169.254.169.254/latest/meta-data/", "http://127.0.0.1/img.jpg"]
    results = fetch_images(uris, SETTINGS, backoff_s=FAST)
    assert [r.reason for r in results] == ["host_not_allowed"] * 3
    assert results[0].detail == "http://metadata.invalid is not allowed (not in VECFLOW_FETCH_ALLOWED_HOSTS)"
    assert results[2].detail.startswith("http://127.0.0.1 is not allowed")  # port 80: not the allowed port
    assert no_dns == []


def test_userinfo_and_unsupported_schemes_are_refused(no_dns):
    uris = [
        "http://user:secret@127.0.0.1:8080/img.jpg",
        "http://127.0.0.1:8080@metadata.invalid/img.jpg",
        "ftp://127.0.0.1:8080/img.jpg",
        "data:image/png;base64,iVBORw0KGgo=",
        "http://[::1:8080/img.jpg",
    ]
    results = fetch_images(uris, SETTINGS, backoff_s=FAST)
    assert [r.reason for r in results] == ["host_not_allowed"] * 2 + ["unsupported_uri"] * 3
    assert results[0].detail == "http://***@127.0.0.1:8080/img.jpg: credentials in the URI (user@host) are refused"
    assert "credentials in the URI" in results[1].detail
    assert results[2].detail.endswith("only http, https, gs, s3 and file URIs are fetched")
    assert results[4].uri == uris[4] and "Invalid IPv6 URL" in results[4].detail
    assert no_dns == []


# --- the allowlist, as pure functions ----------------------------------------------------------------


def _refused(uri: str, *entries: str) -> str | None:
    found = refusal(uri, Allowlist.parse(entries))
    return found and found[0]


def test_exact_hosts_match_any_case_and_a_trailing_dot_on_the_default_port_only():
    assert _refused("https://cdn.shop.example/a.jpg", "cdn.shop.example") is None
    assert _refused("http://CDN.Shop.Example./a.jpg", "cdn.shop.example") is None
    assert _refused("https://cdn.shop.example:443/a.jpg", "cdn.shop.example") is None
    assert _refused("https://cdn.shop.example:8443/a.jpg", "cdn.shop.example") == "host_not_allowed"
    assert _refused("http://cdn.shop.example:443/a.jpg", "cdn.shop.example") == "host_not_allowed"
    assert _refused("https://img.shop.example/a.jpg", "cdn.shop.example") == "host_not_allowed"
    assert _refused("https://cdn.shop.example.evil/a.jpg", "cdn.shop.example") == "host_not_allowed"


def test_wildcards_match_subdomains_not_the_bare_domain():
    allow = Allowlist.parse(["*.shop.example"])
    assert allow.allows_host("https", "a.shop.example")
    assert allow.allows_host("https", "a.b.shop.example")
    assert allow.allows_host("http", "A.Shop.Example.")
    assert not allow.allows_host("https", "shop.example")
    assert not allow.allows_host("https", "evilshop.example")
    assert not allow.allows_host("https", "shop.example.evil")
    assert not allow.allows_host("https", "a.shop.example", 8443)
    assert Allowlist.parse(["*.shop.example:8443"]).allows_host("https", "a.shop.example", 8443)


def test_entries_with_a_port_match_that_port_only():
    allow = Allowlist.parse(["127.0.0.1:8080", "[::1]:9000", "cdn.shop.example:8080"])
    assert allow.allows_host("http", "127.0.0.1", 8080) and allow.allows_host("https", "127.0.0.1", 8080)
    assert not allow.allows_host("http", "127.0.0.1") and not allow.allows_host("http", "127.0.0.1", 8081)
    assert allow.allows_host("http", "::1", 9000) and allow.allows_host("http", "0:0::1", 9000)
    assert _refused("http://[::1]:9000/a.jpg", "[::1]:9000") is None
    assert not allow.allows_host("http", "cdn.shop.example")
    # an IP address matches only as written: no decimal, short or octal forms, no wildcard over it
    for host in ("2130706433", "127.1", "0x7f.0.0.1", "127.000.000.001"):
        assert not allow.allows_host("http", host, 8080), host
    assert not Allowlist.parse(["*.0.0.1"]).allows_host("http", "127.0.0.1")


def test_buckets_match_by_scheme_and_exact_name():
    assert _refused("gs://shop-images/a/b.jpg", "gs://shop-images") is None
    assert _refused("gs://shop-images/a.jpg", "gs://shop-images/") is None
    assert _refused("s3://shop-images/a.jpg", "gs://shop-images") == "host_not_allowed"
    assert _refused("gs://shop-images-2/a.jpg", "gs://shop-images") == "host_not_allowed"
    assert _refused("gs://shop-images/a.jpg", "shop-images") == "host_not_allowed"
    assert _refused("https://shop-images/a.jpg", "gs://shop-images") == "host_not_allowed"
    assert _refused("gs://shop-images/a.jpg::http://evil.invalid/x", "gs://shop-images") == "unsupported_uri"
    assert _refused("gs://shop-images", "gs://shop-images") == "unsupported_uri"  # names no object
    assert _refused("gs://user@shop-images/a.jpg", "gs://shop-images") == "host_not_allowed"


def test_malformed_uris_and_local_files():
    assert _refused("http://cdn.shop.example:99999/a.jpg", "cdn.shop.example") == "unsupported_uri"
    assert _refused("http:///a.jpg", "cdn.shop.example") == "unsupported_uri"
    assert _refused("http://bücher.example/a.jpg", "xn--bcher-kva.example") == "unsupported_uri"
    assert _refused("http://xn--bcher-kva.example/a.jpg", "xn--bcher-kva.example") is None
    assert _refused("http://%63dn.shop.example/a.jpg", "cdn.shop.example") == "unsupported_uri"
    assert _refused("http://cdn.shop.example\\@evil.invalid/a.jpg", "cdn.shop.example") == "host_not_allowed"
    assert _refused("http://cdn.shop.example/a\n.jpg", "cdn.shop.example") == "unsupported_uri"
    assert _refused("gopher://cdn.shop.example/a.jpg", "cdn.shop.example") == "unsupported_uri"
    assert _refused("file://otherhost/etc/passwd") == "unsupported_uri"
    # local files are read whatever the allowlist says, even an empty one
    for uri in ("file:///data/a.jpg", "file://localhost/data/a.jpg", "/data/a.jpg", "images/a.jpg", "C:/a.jpg"):
        assert _refused(uri) is None, uri
    # an empty allowlist fetches nothing remote
    assert _refused("https://cdn.shop.example/a.jpg") == "host_not_allowed"


@pytest.mark.parametrize(
    "entry",
    [
        "*",
        "*.",
        "http://cdn.shop.example",
        "cdn.shop.example/images",
        "a b",
        "gs://",
        "ftp://x",
        "h:0",
        "",
        "bücher.example",
    ],
)
def test_a_malformed_entry_is_a_config_error(entry):
    with pytest.raises(ConfigError, match="VECFLOW_FETCH_ALLOWED_HOSTS entry"):
        Allowlist.parse([entry])


# --- local files, s3 without s3fs, gs through gcsfs --------------------------------------------------------


def test_local_paths_and_file_uris_are_read_directly(tmp_path):
    (tmp_path / "sub dir").mkdir()
    (tmp_path / "sub dir" / "a.png").write_bytes(PNG)
    (tmp_path / "page.jpg").write_bytes(HTML)
    (tmp_path / "big.jpg").write_bytes(BIG)
    uris = [
        str(tmp_path / "sub dir" / "a.png"),
        (tmp_path / "sub dir" / "a.png").as_uri(),  # percent-encoded: file:///.../sub%20dir/a.png
        "sub dir/a.png",  # relative: under root
        str(tmp_path / "nothing.jpg"),
        str(tmp_path / "page.jpg"),
        str(tmp_path / "big.jpg"),
        str(tmp_path),
    ]
    results = fetch_images(uris, replace(SETTINGS, allowed_hosts=()), root=tmp_path)
    assert [r.reason for r in results] == [None, None, None, "dead_link", "not_an_image", "too_large", "fetch_failed"]
    assert all(r.data == PNG for r in results[:3])
    assert results[3].detail == f"{tmp_path / 'nothing.jpg'} does not exist"


def test_s3_without_s3fs_is_a_reject_naming_the_package(monkeypatch, no_dns):
    registry = importlib.import_module("fsspec.registry")  # the module, not fsspec.registry (its mapping)
    monkeypatch.setitem(sys.modules, "s3fs", None)  # unimportable, even where it is installed
    monkeypatch.delitem(registry._registry, "s3", raising=False)
    settings = replace(SETTINGS, allowed_hosts=("s3://shop-images",))
    [result] = fetch_images(["s3://shop-images/a.jpg"], settings)
    assert result.reason == "fetch_failed" and "s3fs" in result.detail and "not installed" in result.detail
    assert no_dns == []


def test_gs_objects_are_fetched_through_gcsfs(gcs_server, monkeypatch):

    import gcsfs

    options = {"token": "anon", "endpoint_url": gcs_server}
    fs = gcsfs.GCSFileSystem(**options)
    fs.mkdir("shop-images")
    fs.pipe({"shop-images/a.jpg": JPEG, "shop-images/page.jpg": HTML, "shop-images/big.jpg": BIG})
    uris = [f"gs://shop-images/{name}" for name in ("a.jpg", "nothing.jpg", "page.jpg", "big.jpg")]
    uris.append("gs://other-bucket/a.jpg")
    settings = replace(SETTINGS, allowed_hosts=("gs://shop-images",))
    results = fetch_images(uris, settings, storage_options=options, backoff_s=FAST)
    assert [r.reason for r in results] == [None, "dead_link", "not_an_image", "too_large", "host_not_allowed"]
    assert results[0].data == JPEG and results[0].content_md5 == hashlib.md5(JPEG).hexdigest()
    assert results[3].detail == f"the object's size {len(BIG)} is over the limit of 10000 bytes"


# --- order, concurrency, logs -------------------------------------------------------------------------------


@uses_server
@pytest.mark.parametrize("per_host, concurrency, bound", [(2, 8, 2), (8, 3, 3)])
def test_requests_in_flight_stay_within_per_host_and_concurrency(server, fetch_settings, per_host, concurrency, bound):
    uris = [_url(server, f"/many/{i}.png") for i in range(50)]
    settings = replace(fetch_settings, per_host=per_host, concurrency=concurrency)
    results = fetch_images(uris, settings, backoff_s=FAST)
    assert [r.uri for r in results] == uris and all(r.ok for r in results)
    assert sum(server.hits.values()) == 50
    assert server.max_in_flight == bound  # reached (requests overlap) and never exceeded


@uses_server
def test_results_keep_the_order_of_the_uris_and_progress_is_logged(server, fetch_settings, caplog):
    paths = ["/slow.jpg", "/img.jpg", "/missing.jpg", "/page.jpg", "/img.png", "/down.jpg"] * 2
    uris = [_url(server, p) for p in paths] + ["ftp://x/y.jpg"]
    settings = replace(fetch_settings, read_timeout_s=0.3, attempts=1, concurrency=4)
    with caplog.at_level(logging.INFO, logger="vecflow.fetch"):
        results = fetch_images(uris, settings, backoff_s=FAST, progress_every=5)
    assert [r.uri for r in results] == uris
    expected = ["fetch_failed", None, "dead_link", "not_an_image", None, "fetch_failed"] * 2 + ["unsupported_uri"]
    assert [r.reason for r in results] == expected
    lines = [r.getMessage() for r in caplog.records if r.name == "vecflow.fetch"]
    assert [line.split(",")[0] for line in lines[:2]] == ["fetch: 5/13 images", "fetch: 10/13 images"]
    assert lines[-1].startswith("fetch: done, 13 images in ") and "images/s" in lines[-1]
    assert lines[-1].endswith(
        "4 fetched, 9 rejects (dead_link 2, fetch_failed 4, not_an_image 2, unsupported_uri 1)"
    ), lines[-1]


def test_fetched_is_a_frozen_typed_row():
    hints = typing.get_type_hints(Fetched)
    assert hints["bytes"] == int | None and hints["data"] == bytes | None
    assert fetch_images([], FetchSettings()) == []
    with pytest.raises(AssertionError):
        Fetched.reject("x", "no_such_reason", "")
