"""Stage -1's download against a real HTTP server on 127.0.0.1 serving a tarball made here: a cut-off transfer
resumes with a Range request, checksums are enforced, unsafe members are refused and a completed part is never
requested again (the module, its CLI and launch/recipes/libritts.sh)."""

import hashlib
import http.server
import io
import os
import re
import subprocess
import sys
import tarfile
import threading

import numpy as np
import pytest
import soundfile as sf

from sovits2_jax.data.prep import download

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
UTTS = ("19_198_000000_000000", "19_198_000001_000000")


class ArchiveServer:
    """``/<name>`` -> bytes over HTTP/1.1. Records (name, Range header) per request; honours ``Range: bytes=N-``
    with 206 unless ``honour_range`` is False (then 200 and the whole file); with ``cut_after`` the first response
    for each file announces its full length but the connection is closed after that many body bytes."""

    def __init__(self, files: dict[str, bytes], cut_after: int | None = None, honour_range: bool = True):
        self.files, self.cut_after, self.honour_range = files, cut_after, honour_range
        self.requests: list[tuple[str, str | None]] = []
        self._cut: set[str] = set()
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):
                owner._serve(self)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/libritts"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()

    def _serve(self, h: http.server.BaseHTTPRequestHandler) -> None:
        name = h.path.removeprefix("/libritts/")
        rng = h.headers.get("Range")
        self.requests.append((name, rng))
        body = self.files.get(name)
        if body is None:
            h.send_error(404)
            return
        start = int(re.fullmatch(r"bytes=(\d+)-", rng).group(1)) if rng and self.honour_range else 0
        if start >= len(body) > 0:
            h.send_response(416)
            h.send_header("Content-Range", f"bytes */{len(body)}")
            h.send_header("Content-Length", "0")
            h.end_headers()
            return
        h.send_response(206 if start else 200)
        if start:
            h.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        payload = body[start:]
        h.send_header("Content-Length", str(len(payload)))
        h.end_headers()
        if self.cut_after is not None and name not in self._cut:
            self._cut.add(name)
            h.wfile.write(payload[: self.cut_after])
            h.close_connection = True  # the handler closes the socket: the client sees EOF mid-body
            return
        h.wfile.write(payload)


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    """A LibriTTS-shaped dev-clean.tar.gz (LibriTTS/dev-clean/19/198/*.wav + .normalized.txt): (bytes, members)."""
    rng = np.random.default_rng(0)
    members = {}
    for k, utt in enumerate(UTTS):
        buf = io.BytesIO()
        sf.write(buf, 0.1 * rng.standard_normal(6000), 24000, format="WAV", subtype="PCM_16")
        stem = f"LibriTTS/dev-clean/19/198/{utt}"
        members[stem + ".wav"] = buf.getvalue()
        members[stem + ".normalized.txt"] = f"Sentence number {k}.".encode()
    return _tarball(members), members


def _tarball(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _md5_file(path, name: str, data: bytes) -> str:
    path.write_text(f"{hashlib.md5(data).hexdigest()}  {name}\n")
    return str(path)


@pytest.mark.parametrize("honour_range", [True, False], ids=["range", "server-ignores-range"])
def test_cut_download_resumes_checks_extracts_and_is_not_repeated(tmp_path, archive, honour_range):
    tarball, members = archive
    cut = len(tarball) // 2
    sums = _md5_file(tmp_path / "md5sum.txt", "dev-clean.tar.gz", tarball)
    dst = tmp_path / "corpus"
    with ArchiveServer({"dev-clean.tar.gz": tarball}, cut_after=cut, honour_range=honour_range) as server:
        fetched = download.download(server.url, ["dev-clean"], str(dst), sums, backoff=0.01)
        assert fetched == ["dev-clean"]
        # the second request resumed from the cut; a server ignoring Range answered 200 and we started over
        assert server.requests == [("dev-clean.tar.gz", None), ("dev-clean.tar.gz", f"bytes={cut}-")]
        assert (dst / "dev-clean.tar.gz").read_bytes() == tarball
        assert not (dst / "dev-clean.tar.gz.part").exists()
        for name, data in members.items():
            assert (dst / name).read_bytes() == data
        assert (dst / ".dev-clean.complete").exists()

        server.requests.clear()
        assert download.download(server.url, ["dev-clean"], str(dst), sums, backoff=0.01) == []
        assert server.requests == []  # a completed part makes no request at all


def test_a_partial_file_left_by_an_earlier_run_is_resumed(tmp_path, archive):
    tarball, _ = archive
    dst = tmp_path / "corpus"
    dst.mkdir()
    (dst / "dev-clean.tar.gz.part").write_bytes(tarball[:1000])
    sums = _md5_file(tmp_path / "md5sum.txt", "dev-clean.tar.gz", tarball)
    with ArchiveServer({"dev-clean.tar.gz": tarball}) as server:
        download.download(server.url, ["dev-clean"], str(dst), sums, backoff=0.01)
    assert server.requests == [("dev-clean.tar.gz", "bytes=1000-")]
    assert (dst / "dev-clean.tar.gz").read_bytes() == tarball


def test_wrong_checksum_is_one_error_line_naming_the_file_and_removes_it(tmp_path, archive):
    tarball, _ = archive
    sums = tmp_path / "md5sum.txt"
    sums.write_text(f"{hashlib.md5(b'another file').hexdigest()} *dev-clean.tar.gz\n")
    dst = tmp_path / "corpus"
    with ArchiveServer({"dev-clean.tar.gz": tarball}) as server:
        cmd = [sys.executable, "-m", "sovits2_jax.data.prep.download", f"--url_prefix={server.url}",
               "--parts=dev-clean", f"--dst={dst}", f"--md5={sums}", "--backoff=0.01"]  # fmt: skip
        out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 1, out.stderr[-2000:]
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("error: download: dev-clean.tar.gz: md5 mismatch"), out.stderr[-2000:]
    assert sorted(os.listdir(dst)) == []  # the bad archive is gone: the next run downloads it again

    # a part with no known checksum fails before any transfer; so does a 404
    with ArchiveServer({}) as server:
        with pytest.raises(download.DownloadError, match=r"no checksum known for dev-cleen\.tar\.gz"):
            download.download(server.url, ["dev-cleen"], str(dst))
        assert server.requests == []
        with pytest.raises(download.DownloadError, match="HTTP 404"):
            download.download(server.url, ["dev-clean"], str(dst), str(sums))


def test_builtin_libritts_size_check_and_unsafe_members(tmp_path, archive):
    tarball, _ = archive
    dst = tmp_path / "corpus"
    too_small = pytest.raises(download.DownloadError, match=r"dev-clean\.tar\.gz: \d+ bytes, expected 1291469655")
    with ArchiveServer({"dev-clean.tar.gz": tarball}) as server, too_small:  # not the real 1.29 GB dev-clean
        download.download(server.url, ["dev-clean"], str(dst))
    assert not (dst / "dev-clean.tar.gz").exists()

    evil = _tarball({"LibriTTS/ok.txt": b"fine", "../escaped.txt": b"outside"})
    sums = _md5_file(tmp_path / "md5sum.txt", "evil.tar.gz", evil)
    refused = pytest.raises(download.DownloadError, match=r"evil\.tar\.gz: unsafe member refused")
    with ArchiveServer({"evil.tar.gz": evil}) as server, refused:
        download.download(server.url, ["evil"], str(dst), sums)
    assert not (tmp_path / "escaped.txt").exists() and not (dst / ".evil.complete").exists()


def test_recipe_stage_minus_one_downloads_then_stage_zero_prepares(tmp_path, archive):
    tarball, _ = archive
    sums = _md5_file(tmp_path / "md5sum.txt", "dev-clean.tar.gz", tarball)
    work = tmp_path / "work"
    script = os.path.join(ROOT, "launch/recipes/libritts.sh")
    env = dict(os.environ, PYTHON=sys.executable)
    with ArchiveServer({"dev-clean.tar.gz": tarball}) as server:
        cmd = ["bash", script, "--stage", "-1", "--stop_stage", "0", "--work", str(work), "--parts", "dev-clean",
               "--download_url", server.url, "--md5", sums]  # fmt: skip
        out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
        assert out.returncode == 0, out.stderr[-3000:]
        assert f"stage -1: download LibriTTS parts (dev-clean) from {server.url}" in out.stdout
        assert server.requests == [("dev-clean.tar.gz", None)]
        assert (work / "corpus" / ".dev-clean.complete").exists()
        wav_scp = (work / "data" / "dev-clean" / "wav.scp").read_text().splitlines()
        assert [line.split(" ")[0] for line in wav_scp] == list(UTTS)
        assert wav_scp[0].endswith("corpus/LibriTTS/dev-clean/19/198/19_198_000000_000000.wav")

        out = subprocess.run([*cmd[:5], "-1", *cmd[6:]], capture_output=True, text=True, env=env, timeout=120)
        assert out.returncode == 0, out.stderr[-3000:]
        assert "already extracted" in out.stderr and server.requests == [("dev-clean.tar.gz", None)]
