"""The downloader against a local HTTP server on 127.0.0.1 (progress, resume, checksums, offline)."""

from __future__ import annotations

import hashlib
import http.server
import os
import threading

import numpy as np
import pytest

from kgcomplete.data import load_dataset
from kgcomplete.data.download import (ChecksumError, DownloadError, OfflineError, RemoteFile, fetch, kgc_home,
                                      prepare)
from kgcomplete.data.formats import build_text_layout

from native_fixtures import make_text_layout, tar_gz


class _Handler(http.server.BaseHTTPRequestHandler):
    files: dict[str, bytes] = {}
    cut_after: list[int] = []  # per request, in order: close the connection after this many body bytes
    ignore_range = False
    no_length = False  # send no Content-Length (the body ends when the connection closes)
    log: list[tuple[str, str]] = []

    def log_message(self, *args):  # keep test output quiet
        pass

    def do_GET(self):
        body = self.files.get(self.path)
        rng = self.headers.get("Range", "")
        type(self).log.append((self.path, rng))
        if body is None:
            self.send_error(404)
            return
        start = 0
        if rng and not self.ignore_range:
            start = int(rng.split("=")[1].split("-")[0])
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        part = body[start:]
        if not self.no_length:
            self.send_header("Content-Length", str(len(part)))
        self.end_headers()
        cut = type(self).cut_after.pop(0) if type(self).cut_after else None
        if cut is not None:
            self.wfile.write(part[:cut])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(part)


@pytest.fixture
def server():
    _Handler.files, _Handler.cut_after, _Handler.log, _Handler.ignore_range = {}, [], [], False
    _Handler.no_length = False
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", _Handler
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


PAYLOAD = np.random.default_rng(0).bytes(300_000)
SHA = hashlib.sha256(PAYLOAD).hexdigest()


def test_download_with_progress_and_checksum(server, tmp_path, capsys):
    url, h = server
    h.files["/a.bin"] = PAYLOAD
    spec = RemoteFile("a.bin", (f"{url}/a.bin",), size=len(PAYLOAD), sha256=SHA)
    path = fetch(spec, tmp_path, progress=True)
    assert path.read_bytes() == PAYLOAD and not (tmp_path / "a.bin.part").exists()
    assert "a.bin" in capsys.readouterr().err  # the tqdm bar
    n = len(h.log)
    assert fetch(spec, tmp_path) == path and len(h.log) == n  # cached: no request


def test_resume_partial_download_with_range(server, tmp_path):
    url, h = server
    h.files["/a.bin"] = PAYLOAD
    h.cut_after = [120_000]
    spec = RemoteFile("a.bin", (f"{url}/a.bin",), size=len(PAYLOAD), sha256=SHA)
    with pytest.raises(DownloadError, match=r"a\.bin\.part and resumes next time.*put it at .*a\.bin"):
        fetch(spec, tmp_path, progress=False, retries=0)
    assert (tmp_path / "a.bin.part").stat().st_size == 120_000
    path = fetch(spec, tmp_path, progress=False, retries=0)
    assert path.read_bytes() == PAYLOAD
    assert h.log[-1] == ("/a.bin", "bytes=120000-")


def test_retry_resumes_within_one_call(server, tmp_path):
    url, h = server
    h.files["/a.bin"] = PAYLOAD
    h.cut_after = [50_000, 100_000]
    spec = RemoteFile("a.bin", (f"{url}/a.bin",), sha256=SHA)
    assert fetch(spec, tmp_path, progress=False, retries=2).read_bytes() == PAYLOAD
    assert [r for _, r in h.log] == ["", "bytes=50000-", "bytes=150000-"]


def test_server_ignoring_range_restarts(server, tmp_path):
    url, h = server
    h.files["/a.bin"] = PAYLOAD
    h.ignore_range = True
    (tmp_path / "a.bin.part").write_bytes(PAYLOAD[:1000])
    spec = RemoteFile("a.bin", (f"{url}/a.bin",), sha256=SHA)
    assert fetch(spec, tmp_path, progress=False).read_bytes() == PAYLOAD


def test_bad_checksum(server, tmp_path):
    url, h = server
    h.files["/a.bin"] = PAYLOAD
    spec = RemoteFile("a.bin", (f"{url}/a.bin",), md5="0" * 32)
    with pytest.raises(ChecksumError, match=r"md5 mismatch \(expected 0{32}, got [0-9a-f]{32}.*put it at .*a\.bin"):
        fetch(spec, tmp_path, progress=False)
    assert not (tmp_path / "a.bin").exists() and (tmp_path / "a.bin.corrupt").exists()


def test_mirror_used_when_official_url_fails(server, tmp_path):
    url, h = server
    h.files["/mirror/a.bin"] = PAYLOAD
    spec = RemoteFile("a.bin", (f"{url}/gone/a.bin", f"{url}/mirror/a.bin"), sha256=SHA)
    assert fetch(spec, tmp_path, progress=False).read_bytes() == PAYLOAD


def test_network_unavailable_says_which_file_where(tmp_path):
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    spec = RemoteFile("kinship.tar.gz", (f"http://127.0.0.1:{port}/kinship.tar.gz",), size=1234)
    with pytest.raises(DownloadError) as e:
        fetch(spec, tmp_path / "dl", progress=False, retries=0, timeout=2)
    msg = str(e.value)
    assert f"http://127.0.0.1:{port}/kinship.tar.gz" in msg and str(tmp_path / "dl" / "kinship.tar.gz") in msg


def test_offline_mode_error_then_manual_placement_works(server, tmp_path, monkeypatch):
    """KGC_OFFLINE=1: no request is made, the error names the URL and the path; putting the file
    there (as told) makes the registered dataset load offline."""
    url, h = server
    monkeypatch.setenv("KGC_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("KGC_OFFLINE", "1")
    with pytest.raises(OfflineError) as e:
        load_dataset("kinships")
    msg = str(e.value)
    dest = kgc_home() / "downloads" / "kinships" / "kinship.tar.gz"
    assert "https://github.com/TimDettmers/ConvE/raw/master/kinship.tar.gz" in msg and str(dest) in msg
    assert h.log == []
    make_text_layout(tmp_path / "kin")
    dest.parent.mkdir(parents=True)
    tar_gz(tmp_path / "kin", dest)
    from click.testing import CliRunner

    from kgcomplete.cli.main import cli

    res = CliRunner().invoke(cli, ["datasets", "download", "kinships", "--quiet"])
    assert res.exit_code == 0, res.output
    assert "kinships: 4 entities, 2 relations, train=4" in res.output  # counts read from meta.json
    ds = load_dataset("kinships")
    assert ds.num_entities == 4 and len(ds.train) == 4
    assert (kgc_home() / "compact" / "kinships" / "unknown-error" / "meta.json").exists()
    os.remove(dest)  # the compact copy is enough from now on
    assert load_dataset("kinships").num_relations == 2


def test_prepare_downloads_extracts_and_builds(server, tmp_path, monkeypatch):
    url, h = server
    monkeypatch.setenv("KGC_HOME", str(tmp_path / "home"))
    make_text_layout(tmp_path / "src", crlf=True)
    archive = tar_gz(tmp_path / "src", tmp_path / "FB.tar.gz", arcroot="Release")
    h.files["/FB.tar.gz"] = archive.read_bytes()
    spec = RemoteFile("FB.tar.gz", (f"{url}/FB.tar.gz",), sha256=hashlib.sha256(archive.read_bytes()).hexdigest())
    raw = prepare("fbtest", [spec], progress=False)
    assert (raw / "Release" / "train.txt").exists()
    n = len(h.log)
    assert prepare("fbtest", [spec], progress=False) == raw and len(h.log) == n  # extracted once
    build_text_layout(raw, tmp_path / "c", name="fbtest")
    from kgcomplete.data.compact import load_compact

    assert load_compact(tmp_path / "c").num_entities == 4


def test_no_length_and_no_checksum_is_accepted_with_a_warning_naming_the_risk(server, tmp_path, caplog):
    url, h = server
    h.files["/t.txt"], h.no_length = PAYLOAD, True
    h.cut_after = [100_000]  # cut short: nothing can tell
    path = fetch(RemoteFile("t.txt", (f"{url}/t.txt",)), tmp_path, progress=False)
    assert path.stat().st_size == 100_000
    assert any("accepted without a check" in r.message and "cut short would look complete" in r.message
               for r in caplog.records), caplog.text


def test_a_published_size_without_checksum_catches_a_truncated_file(server, tmp_path):
    url, h = server
    h.files["/t.txt"], h.no_length = PAYLOAD, True
    h.cut_after = [100_000]
    with pytest.raises(ChecksumError, match="100,000 bytes, the published size is 300,000"):
        fetch(RemoteFile("t.txt", (f"{url}/t.txt",), size=len(PAYLOAD)), tmp_path, progress=False)
    assert (tmp_path / "t.txt.corrupt").exists() and not (tmp_path / "t.txt").exists()


def test_a_damaged_cached_archive_is_moved_aside_and_fetched_again(server, tmp_path, monkeypatch, caplog):
    url, h = server
    monkeypatch.setenv("KGC_HOME", str(tmp_path / "home"))
    make_text_layout(tmp_path / "src")
    archive = tar_gz(tmp_path / "src", tmp_path / "FB.tar.gz", arcroot="Release")
    good = archive.read_bytes()
    spec = RemoteFile("FB.tar.gz", (f"{url}/FB.tar.gz",))  # no checksum published
    cache = kgc_home() / "downloads" / "fbtest"
    cache.mkdir(parents=True)
    (cache / "FB.tar.gz").write_bytes(good[: len(good) // 2])  # an earlier download, cut short
    h.files["/FB.tar.gz"] = good
    raw = prepare("fbtest", [spec], progress=False)
    assert (raw / "Release" / "train.txt").exists()
    assert (cache / "FB.tar.gz.corrupt").read_bytes() == good[: len(good) // 2]
    assert (cache / "FB.tar.gz").read_bytes() == good
    assert any("damaged archive" in r.message and "downloading it again" in r.message for r in caplog.records)


def test_a_damaged_cached_archive_offline_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("KGC_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("KGC_OFFLINE", "1")
    cache = kgc_home() / "downloads" / "fbtest"
    cache.mkdir(parents=True)
    (cache / "FB.tar.gz").write_bytes(b"not a tar")
    with pytest.raises(OfflineError, match="damaged archive.*moved to .*FB.tar.gz.corrupt.*put it at"):
        prepare("fbtest", [RemoteFile("FB.tar.gz", ("http://127.0.0.1:9/FB.tar.gz",))], progress=False)
