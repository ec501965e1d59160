"""The external-model manifest, verified downloads and ``archive-restore models``.

Downloads run against a local HTTP server started by the tests (127.0.0.1, a thread) that serves
bytes from memory and honours Range requests, so resuming, checksum mismatches, servers that ignore
Range and being offline are all exercised without the real URLs.
"""
from __future__ import annotations

import dataclasses
import hashlib
import re
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from click.testing import CliRunner

from archive_restore.weights import downloads as weights
from archive_restore.cli import cli
from archive_restore.errors import DownloadError, ModelNotFoundError, UsageError

PAYLOAD = bytes(range(256)) * 4096 + b"tail"  # ~1 MiB: more than one read block
PAYLOAD_SHA = hashlib.sha256(PAYLOAD).hexdigest()


class _Server:
    """Files served from memory; records the Range header of every request."""

    def __init__(self, files: dict[str, bytes], honour_range: bool = True, linger: float = 0.0):
        self.files = files
        self.honour_range = honour_range
        self.linger = linger  # seconds the handler stays after sending the body (a slow server thread)
        self.ranges: list[str | None] = []
        self.sent = 0
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/{name}"

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                data = server.files.get(self.path.lstrip("/"))
                header = self.headers.get("Range")
                server.ranges.append(header)
                if data is None:
                    self.send_error(404)
                    return
                start = int(re.fullmatch(r"bytes=(\d+)-", header).group(1)) if header else 0
                if header and server.honour_range:
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    start = 0
                    self.send_response(200)
                body = data[start:]
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                server.sent += len(body)  # counted before the client can have it: a test asserts on it then
                self.wfile.write(body)
                self.wfile.flush()
                time.sleep(server.linger)

        return Handler

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    srv = _Server({"model.pth": PAYLOAD})
    yield srv
    srv.close()


def _entry(url: str, sha256: str | None = PAYLOAD_SHA, **kw) -> weights.ModelEntry:
    return weights.ModelEntry("test-model", "model.pth", url, "MIT", "tests", sha256=sha256, **kw)


# ---------------------------------------------------------------------------------- manifest

def test_manifest_lists_every_external_model_with_its_official_source():
    assert {"gfpgan-v1.4", "gfpgan-v1.3", "retinaface-resnet50", "retinaface-mobilenet0.25", "parsenet",
            "bisenet", "yunet-2023mar"} <= set(weights.MANIFEST)
    assert weights.entry("gfpgan-v1.4").url == \
        "https://github.com/TencentARC/GFPGAN/releases/download/v1.3.4/GFPGANv1.4.pth"
    for item in weights.MANIFEST.values():
        assert item.url.startswith("https://")
        assert item.url.endswith("/" + item.filename) or item.name == "yunet-s"  # renamed in its repository
        assert item.licence and item.used_by and item.sha256_source
        # Pinned checksums are well-formed and say where they come from (a file in ../shared/weights,
        # the Git LFS pointers of the official files, or public manifests that agree where the project
        # publishes none); none is invented.
        for digest in filter(None, [item.sha256, *item.accepted]):
            assert re.fullmatch(r"[0-9a-f]{64}", digest)
            provenance = item.sha256_source + " ".join(item.accepted.values())
            assert any(s in provenance for s in ("shared/weights", "cross-checked", "Git LFS pointers"))
    # The strong upscalers (DESIGN.md §2b) are pinned, from their official releases.
    for name, release in (("realesrgan-x4plus", "v0.1.0"), ("realesr-general-x4v3", "v0.2.5.0"),
                          ("realesr-general-wdn-x4v3", "v0.2.5.0"), ("realesr-animevideov3", "v0.2.5.0"),
                          ("realesrgan-x4plus-anime-6b", "v0.2.2.4")):
        item = weights.entry(name)
        assert item.url == f"https://github.com/xinntao/Real-ESRGAN/releases/download/{release}/{item.filename}"
        assert item.sha256 and item.size and "--upscaler" in item.used_by and "BSD-3-Clause" in item.licence
    assert weights.entry("retinaface-resnet50").sha256 and weights.entry("parsenet").sha256
    with pytest.raises(UsageError, match="unknown model 'nope'"):
        weights.entry("nope")


def test_shared_detector_weights_verify_against_the_manifest(shared_weights):
    mobilenet = weights.verify(weights.entry("retinaface-mobilenet0.25"),
                               shared_weights / "detection_mobilenet0.25_Final.pth")
    assert mobilenet.status == "accepted" and "biubug6" in mobilenet.note
    yunet = weights.verify(weights.entry("yunet-s"), shared_weights / "face_detection_yunet_s_640_640.onnx")
    assert yunet.status == "ok"


def test_find_follows_the_search_order_and_says_how_to_fetch(tmp_path, monkeypatch):
    first, second = tmp_path / "a", tmp_path / "b"
    for folder in (first, second):
        folder.mkdir()
    monkeypatch.setenv("ARCHIVE_RESTORE_MODELS", str(second))
    item = weights.entry("gfpgan-v1.4")
    with pytest.raises(ModelNotFoundError, match=r"models fetch gfpgan-v1\.4"):
        weights.find(item, [first])
    (second / item.filename).write_bytes(b"x")
    assert weights.find(item, [first]) == second / item.filename
    (first / item.filename).write_bytes(b"y")
    assert weights.locate(item, [first])[:2] == [first / item.filename, second / item.filename]
    assert weights.download_dir([first]) == first and weights.download_dir() == second


# ------------------------------------------------------------------------------------ fetch

def test_fetch_downloads_verifies_and_installs(tmp_path, server):
    result = weights.fetch(_entry(server.url("model.pth")), tmp_path, progress=False)
    assert result.status == "ok" and result.path == tmp_path / "model.pth"
    assert (tmp_path / "model.pth").read_bytes() == PAYLOAD
    assert not (tmp_path / "model.pth.part").exists()
    assert server.ranges == [None]
    # A verified copy is not downloaded again.
    weights.fetch(_entry(server.url("model.pth")), tmp_path, progress=False)
    assert len(server.ranges) == 1


def test_fetch_resumes_a_partial_download_with_a_range_request(tmp_path, server):
    (tmp_path / "model.pth.part").write_bytes(PAYLOAD[:300_000])
    weights.fetch(_entry(server.url("model.pth")), tmp_path, progress=False)
    assert server.ranges == ["bytes=300000-"]
    assert server.sent == len(PAYLOAD) - 300_000
    assert (tmp_path / "model.pth").read_bytes() == PAYLOAD


def test_what_the_server_counts_is_there_when_the_client_has_its_answer(tmp_path):
    """The race CI met once: the count came after the body, so an assertion could run before it. A server
    thread that lingers after sending makes the old order fail every time."""
    srv = _Server({"model.pth": PAYLOAD}, linger=0.5)
    try:
        weights.fetch(_entry(srv.url("model.pth")), tmp_path, progress=False)
        assert srv.sent == len(PAYLOAD)
    finally:
        srv.close()


def test_fetch_of_an_already_whole_part_file_answered_416(tmp_path, server):
    (tmp_path / "model.pth.part").write_bytes(PAYLOAD)
    weights.fetch(_entry(server.url("model.pth")), tmp_path, progress=False)
    assert server.ranges == [f"bytes={len(PAYLOAD)}-"] and server.sent == 0
    assert (tmp_path / "model.pth").read_bytes() == PAYLOAD


def test_fetch_starts_over_when_the_server_ignores_range(tmp_path):
    srv = _Server({"model.pth": PAYLOAD}, honour_range=False)
    try:
        (tmp_path / "model.pth.part").write_bytes(b"stale bytes from another file")
        weights.fetch(_entry(srv.url("model.pth")), tmp_path, progress=False)
    finally:
        srv.close()
    assert (tmp_path / "model.pth").read_bytes() == PAYLOAD


def test_checksum_mismatch_deletes_the_download_and_says_so(tmp_path, server):
    wrong = "0" * 64
    with pytest.raises(DownloadError, match=f"has sha256 {PAYLOAD_SHA}, but {wrong} was expected"):
        weights.fetch(_entry(server.url("model.pth"), sha256=wrong), tmp_path, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_a_corrupt_installed_copy_is_replaced(tmp_path, server):
    (tmp_path / "model.pth").write_bytes(b"corrupt")
    assert weights.verify(_entry("http://unused/model.pth"), tmp_path / "model.pth").status == "mismatch"
    weights.fetch(_entry(server.url("model.pth")), tmp_path, progress=False)
    assert (tmp_path / "model.pth").read_bytes() == PAYLOAD


def test_an_unpinned_file_needs_trust_and_its_sha256_is_reported(tmp_path, server):
    item = _entry(server.url("model.pth"), sha256=None)
    with pytest.raises(DownloadError, match=f"no pinned sha256.*its sha256 is {PAYLOAD_SHA}.*--trust-unverified"):
        weights.fetch(item, tmp_path, progress=False)
    assert not (tmp_path / "model.pth").exists() and (tmp_path / "model.pth.part").stat().st_size == len(PAYLOAD)
    result = weights.fetch(item, tmp_path, trust_unverified=True, progress=False)
    assert result.status == "unpinned" and result.sha256 == PAYLOAD_SHA
    assert (tmp_path / "model.pth").read_bytes() == PAYLOAD
    assert server.sent == len(PAYLOAD)  # the kept download was reused, not fetched twice


def test_offline_is_a_clear_download_error_not_a_hang(tmp_path):
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(DownloadError, match="cannot download .*Offline\\?"):
        weights.fetch(_entry(f"http://127.0.0.1:{port}/model.pth"), tmp_path, progress=False, timeout=2)
    with pytest.raises(DownloadError, match="HTTP 404"):
        srv = _Server({})
        try:
            weights.fetch(_entry(srv.url("model.pth")), tmp_path, progress=False, timeout=2)
        finally:
            srv.close()


# -------------------------------------------------------------------------------------- CLI

def _invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, ["models", *args], catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def isolated(tmp_path, monkeypatch) -> Path:
    """No environment folder and an empty home cache: only the folders a test names are searched."""
    monkeypatch.delenv("ARCHIVE_RESTORE_MODELS", raising=False)
    monkeypatch.setattr(weights, "USER_CACHE", tmp_path / "cache")
    monkeypatch.setattr(Path, "home", lambda: tmp_path / "home")
    return tmp_path


def test_models_list_path_and_verify(isolated, shared_weights):
    code, out, _ = _invoke("list", "--models-dir", str(shared_weights))
    assert code == 0
    assert re.search(r"retinaface-mobilenet0\.25 .*present.*shared/weights", out)
    assert re.search(r"gfpgan-v1\.4 .*missing", out) and "models fetch gfpgan-v1.4" in out
    code, out, _ = _invoke("path", "yunet-s", "--models-dir", str(shared_weights))
    assert (code, out.strip()) == (0, str(shared_weights / "face_detection_yunet_s_640_640.onnx"))
    code, _, err = _invoke("path", "gfpgan-v1.4", "--models-dir", str(shared_weights))
    assert code == 1 and "GFPGANv1.4.pth (gfpgan-v1.4) not found" in err
    code, out, _ = _invoke("verify", "--models-dir", str(shared_weights))
    assert code == 0 and re.search(r"yunet-s .* ok", out) and re.search(r"mobilenet0\.25 .* accepted", out)


def test_models_verify_fails_on_a_mismatch(isolated):
    folder = isolated / "models"
    folder.mkdir()
    (folder / "face_detection_yunet_s_640_640.onnx").write_bytes(b"not the model")
    code, out, _ = _invoke("verify", "--models-dir", str(folder))
    assert code == 1 and "MISMATCH" in out


def test_models_fetch_through_the_cli(isolated, server, monkeypatch):
    item = dataclasses.replace(weights.entry("yunet-s"), url=server.url("model.pth"), sha256=PAYLOAD_SHA)
    monkeypatch.setitem(weights.MANIFEST, "yunet-s", item)
    dest = isolated / "models"
    code, out, _ = _invoke("fetch", "yunet-s", "--models-dir", str(dest))
    assert code == 0 and f"yunet-s: {dest / item.filename}" in out
    assert (dest / item.filename).read_bytes() == PAYLOAD
    code, _, err = _invoke("fetch", "nope")
    assert code == 2 and "unknown model 'nope'" in err
    offline = dataclasses.replace(item, url="http://127.0.0.1:9/model.pth")
    monkeypatch.setitem(weights.MANIFEST, "yunet-s", offline)
    code, _, err = _invoke("fetch", "yunet-s", "--models-dir", str(isolated / "elsewhere"))
    assert code == 1 and err.startswith("error: cannot download") and "Traceback" not in err
