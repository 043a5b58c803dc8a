"""Download and unpack corpus archives: ``<url_prefix>/<part>.tar.gz`` for each part, resumable and checked.

    python -m sovits2_jax.data.prep.download --url_prefix www.openslr.org/resources/60 \
        --parts dev-clean,test-clean --dst corpus [--md5 sums.txt]

Per part: a partial ``DST/<part>.tar.gz.part`` is resumed with an HTTP ``Range`` request (a server answering 200
instead of 206 restarts it from byte 0); connection errors and short reads are retried with exponential backoff;
the finished archive is checked against its known digest (a mismatch removes the partial file and names it), renamed
to ``DST/<part>.tar.gz``, extracted into DST with tarfile's ``data`` filter (no member may land outside DST, no
device files or links leaving it) and marked done by ``DST/.<part>.complete``; a part with that flag is skipped
without any request. Progress goes to stderr.
"""

from __future__ import annotations

import dataclasses
import hashlib
import http.client
import os
import re
import ssl
import sys
import tarfile
import time
import urllib.error
import urllib.request

from absl import flags
from tqdm import tqdm

from sovits2_jax import cli

DEFAULT_URL_PREFIX = "www.openslr.org/resources/60"  # CosyVoice's examples/libritts run.sh data_url

# LibriTTS's archives (openslr resource 60): size in bytes and SHA-256, as published with torchaudio's and
# TensorFlow Datasets' LibriTTS loaders (openslr lists no md5 for this resource). Facts, not code.
LIBRITTS_SUMS: dict[str, tuple[int, str]] = {
    "dev-clean": (1291469655, "da0864e1bd26debed35da8a869dd5c04dfc27682921936de7cff9c8a254dbe1a"),
    "dev-other": (924804676, "d413eda26f3a152ac7c9cf3658ef85504dfb1b625296e5fa83727f5186cca79c"),
    "test-clean": (1230670113, "234ea5b25859102a87024a4b9b86641f5b5aaaf1197335c95090cde04fe9a4f5"),
    "test-other": (964502297, "33a5342094f3bba7ccc2e0500b9e72d558f72eb99328ac8debe1d9080402f10d"),
    "train-clean-100": (7723686890, "c5608bf1ef74bb621935382b8399c5cdd51cd3ee47cec51f00f885a64c6c7f6b"),
    "train-clean-360": (27504073644, "ce7cff44dcac46009d18379f37ef36551123a1dc4e5c8e4eb73ae57260de4886"),
    "train-other-500": (44565031479, "e35f7e34deeb2e2bdfe4403d88c8fdd5fbf64865cae41f027a185a6965f0a5df"),
}

_CHUNK = 1 << 20
_HASHES = {32: "md5", 64: "sha256"}  # hex digest length -> algorithm
_RETRYABLE = (urllib.error.URLError, http.client.HTTPException, ConnectionError, TimeoutError, ssl.SSLError)
_RETRY_HTTP = (408, 429)  # client-side HTTP codes worth another try; others (404...) are final


class DownloadError(cli.Error):
    """A download, check or extraction that failed in a way the user must look at (one line)."""


class _ShortRead(Exception):
    """The server closed the connection before the announced length; the partial file stays for a resume."""


@dataclasses.dataclass(frozen=True)
class Checksum:
    """The expected hex digest of an archive (md5 or sha256, by length) and its size when known."""

    digest: str
    size: int | None = None

    @property
    def algorithm(self) -> str:
        return _HASHES[len(self.digest)]


def read_sums(path: str) -> dict[str, Checksum]:
    """``md5sum``/``sha256sum`` output (``HEX  NAME`` or ``HEX *NAME``) -> {part: Checksum}, the part being the
    file name without ``.tar.gz``."""
    sums = {}
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip() or line.startswith("#"):
                continue
            m = re.fullmatch(r"([0-9a-fA-F]+) [ *](\S.*)", line.rstrip("\n"))
            if not m or len(m.group(1)) not in _HASHES:
                raise DownloadError(f"download: {path}:{n}: not an md5sum/sha256sum line: {line.strip()!r}")
            name = os.path.basename(m.group(2).strip())
            sums[name.removesuffix(".tar.gz")] = Checksum(m.group(1).lower())
    return sums


def expected_sums(parts: list[str], md5_file: str | None = None) -> dict[str, Checksum]:
    """The checksum of each part: from ``md5_file`` when it lists the part, else LibriTTS's table."""
    given = read_sums(md5_file) if md5_file else {}
    out = {}
    for part in parts:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", part):
            raise DownloadError(f"download: part name {part!r} is not a plain file name")
        if part in given:
            out[part] = given[part]
        elif part in LIBRITTS_SUMS:
            size, digest = LIBRITTS_SUMS[part]
            out[part] = Checksum(digest, size)
        else:
            raise DownloadError(
                f"download: no checksum known for {part}.tar.gz (LibriTTS parts: {', '.join(LIBRITTS_SUMS)});"
                " give it with --md5 FILE"
            )
    return out


def part_url(url_prefix: str, part: str) -> str:
    """``<prefix>/<part>.tar.gz``; a prefix without a scheme (as CosyVoice writes it) gets ``https://``."""
    prefix = url_prefix.rstrip("/")
    if "://" not in prefix:
        prefix = "https://" + prefix
    return f"{prefix}/{part}.tar.gz"


def fetch(url: str, dest: str, *, retries: int = 5, backoff: float = 2.0, timeout: float = 60.0) -> None:
    """Download ``url`` to ``dest`` through ``dest + '.part'``, resuming it with Range requests; retried with
    exponential backoff on connection errors (a retry that made progress resets the count)."""
    partial = dest + ".part"
    failures = 0
    while True:
        before = os.path.getsize(partial) if os.path.exists(partial) else 0
        try:
            if _fetch_once(url, partial, timeout):
                os.replace(partial, dest)
                return
        except (_ShortRead, *_RETRYABLE) as exc:
            if isinstance(exc, urllib.error.HTTPError) and exc.code < 500 and exc.code not in _RETRY_HTTP:
                raise DownloadError(f"download: {url}: HTTP {exc.code} {exc.reason}") from None
            got = os.path.getsize(partial) if os.path.exists(partial) else 0
            failures = 1 if got > before else failures + 1
            if failures > retries:
                raise DownloadError(f"download: {url}: giving up after {retries} retries: {_describe(exc)}") from None
            wait = backoff * 2 ** (failures - 1)
            print(f"download: {os.path.basename(dest)}: {_describe(exc)}; retry in {wait:.1f}s", file=sys.stderr)
            time.sleep(wait)


def _describe(exc: BaseException) -> str:
    return f"{exc.__class__.__name__}: {exc}" if str(exc) else exc.__class__.__name__


def _fetch_once(url: str, partial: str, timeout: float) -> bool:
    """One request appending to ``partial``; True when the file is complete."""
    offset = os.path.getsize(partial) if os.path.exists(partial) else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={offset}-"} if offset else {})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:  # nothing past our end: complete if the server's total is what we hold
            total = (exc.headers.get("Content-Range") or "").rpartition("/")[2]
            if total.isdigit() and int(total) == offset:
                return True
            os.remove(partial)  # longer than the file on the server: start again
            return False
        raise
    with response:
        if response.status == 206:
            start = (response.headers.get("Content-Range") or "").removeprefix("bytes ").partition("-")[0]
            if start != str(offset):
                raise DownloadError(f"download: {url}: asked for bytes {offset}- and got range {start!r}")
            mode = "ab"
        else:  # 200: the server ignored Range, so the body is the whole file
            offset, mode = 0, "wb"
        length = response.headers.get("Content-Length")
        expected = int(length) if length is not None and length.isdigit() else None
        received = 0
        total = offset + expected if expected is not None else None
        name = os.path.basename(partial).removesuffix(".part")
        with open(partial, mode) as f, tqdm(total=total, initial=offset, unit="B", unit_scale=True, desc=name,
                                            file=sys.stderr, disable=None, dynamic_ncols=True,
                                            mininterval=1.0) as bar:  # fmt: skip
            while chunk := response.read(_CHUNK):
                f.write(chunk)
                received += len(chunk)
                bar.update(len(chunk))
    if expected is not None and received < expected:
        raise _ShortRead(f"connection closed after {offset + received} of {offset + expected} bytes")
    return True


def file_digest(path: str, algorithm: str) -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def verify(path: str, expected: Checksum) -> None:
    """Raises DownloadError naming ``path`` (and removes it) when its size or digest is not the expected one."""
    name = os.path.basename(path)
    size = os.path.getsize(path)
    if expected.size is not None and size != expected.size:
        os.remove(path)
        raise DownloadError(f"download: {name}: {size} bytes, expected {expected.size}; removed it, rerun to fetch")
    got = file_digest(path, expected.algorithm)
    if got != expected.digest:
        os.remove(path)
        raise DownloadError(
            f"download: {name}: {expected.algorithm} mismatch (expected {expected.digest}, got {got}); removed it,"
            " rerun to download it again"
        )


def extract(archive: str, dst: str) -> int:
    """Unpacks a .tar.gz into ``dst`` with tarfile's ``data`` filter; returns the number of members."""
    try:
        with tarfile.open(archive, "r:*") as tar:
            tar.extractall(dst, filter="data")  # one sequential pass over the gzip stream
            n = len(tar.getmembers())
    except tarfile.FilterError as exc:
        raise DownloadError(f"download: {os.path.basename(archive)}: unsafe member refused: {exc}") from None
    except (tarfile.TarError, EOFError) as exc:
        raise DownloadError(f"download: {os.path.basename(archive)}: not a readable tar.gz: {exc}") from None
    return n


def complete_flag(dst: str, part: str) -> str:
    return os.path.join(dst, f".{part}.complete")


def download_part(url_prefix: str, part: str, dst: str, checksum: Checksum, *, remove_archive: bool = False,
                  retries: int = 5, backoff: float = 2.0, timeout: float = 60.0) -> bool:  # fmt: skip
    """Fetch, check and extract one part; False (and no request) when its completion flag exists."""
    flag = complete_flag(dst, part)
    if os.path.exists(flag):
        print(f"download: {part} is already extracted in {dst} ({os.path.basename(flag)}); nothing to do",
              file=sys.stderr)  # fmt: skip
        return False
    os.makedirs(dst, exist_ok=True)
    archive = os.path.join(dst, f"{part}.tar.gz")
    if not os.path.exists(archive):
        url = part_url(url_prefix, part)
        print(f"download: {url} -> {archive}", file=sys.stderr)
        fetch(url, archive, retries=retries, backoff=backoff, timeout=timeout)
    verify(archive, checksum)
    n = extract(archive, dst)
    with open(flag + ".tmp", "w", encoding="utf-8") as f:
        f.write(f"{part}.tar.gz {checksum.algorithm} {checksum.digest} {n} members\n")
    os.replace(flag + ".tmp", flag)
    if remove_archive:
        os.remove(archive)
    print(f"download: {part}: {n} members extracted into {dst}", file=sys.stderr)
    return True


def download(url_prefix: str, parts: list[str], dst: str, md5_file: str | None = None, **kwargs) -> list[str]:
    """Every part in turn (checksums resolved first, so an unknown part fails before any transfer); returns the
    parts fetched now."""
    sums = expected_sums(parts, md5_file)
    return [part for part in parts if download_part(url_prefix, part, dst, sums[part], **kwargs)]


def main(argv: list[str]) -> None:
    """CLI: download, check and extract ``--parts`` from ``--url_prefix`` into ``--dst``."""
    cli.command(argv)
    f = flags.FLAGS
    parts = [p for p in re.split(r"[,\s]+", f.parts) if p]
    if not parts:
        raise cli.Error("download: give --parts, e.g. dev-clean,test-clean")
    done = download(f.url_prefix, parts, f.dst, f.md5, remove_archive=f.remove_archive, retries=f.retries,
                    backoff=f.backoff, timeout=f.timeout)  # fmt: skip
    print(f"download: {len(done)} of {len(parts)} parts fetched now, all in {f.dst}")


if __name__ == "__main__":
    flags.DEFINE_string("url_prefix", DEFAULT_URL_PREFIX, "URL prefix; <prefix>/<part>.tar.gz is fetched")
    flags.DEFINE_string("parts", "dev-clean,test-clean", "comma- or space-separated part names")
    flags.DEFINE_string("dst", None, "directory to download and extract into", required=True)
    flags.DEFINE_string("md5", None, "md5sum (or sha256sum) format file overriding the built-in LibriTTS sums")
    flags.DEFINE_bool("remove_archive", False, "delete each .tar.gz after a successful extraction")
    flags.DEFINE_integer("retries", 5, "consecutive connection failures tolerated per part")
    flags.DEFINE_float("backoff", 2.0, "seconds before the first retry (doubling each time)")
    flags.DEFINE_float("timeout", 60.0, "socket timeout in seconds")
    cli.run_logged(main)
