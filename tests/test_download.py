"""Dataset downloads on request (utils/io/download.py, data/download.py) against a loopback HTTP server: resumed
after a dropped connection and after an interrupted run (HTTP Range), checksum and size mismatches as one-line
errors, unpacking, and nothing fetched unless asked."""
import hashlib
import io
import re
import socket
import tarfile
import zipfile

import numpy as np
import pytest
import yaml

from data import download as download_cli
from tests.file_server import FileServer
from utils.data.config import check_dataset
from utils.io.download import (
    Asset,
    DownloadError,
    download_dataset,
    fetch,
    parse_assets,
)

FAST = {"retries": 0, "timeout": 5.0, "backoff": 0.0}


def make_zip() -> bytes:
    """A ~200 kB zip of incompressible bytes (so a drop midway is a real partial download)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        z.writestr("ds/images/a.bin", np.random.default_rng(0).bytes(200_000))
        z.writestr("ds/README.txt", "hello")
    return buf.getvalue()


ZIP = make_zip()
SHA = hashlib.sha256(ZIP).hexdigest()


def asset(server: FileServer, **kw) -> Asset:
    return Asset(server.url("/ds.zip"), **{"size": len(ZIP), "sha256": SHA, **kw})


def test_dropped_connection_resumes_with_range(tmp_path):
    with FileServer({"/ds.zip": ZIP}, drops=[70_000]) as srv:
        f = fetch(asset(srv), tmp_path, **{**FAST, "retries": 2})
    assert f.read_bytes() == ZIP
    assert srv.ranges == [None, "bytes=70000-"]
    assert not (tmp_path / "ds.zip.part").exists()


def test_interrupted_run_resumes_on_the_next_run(tmp_path):
    with FileServer({"/ds.zip": ZIP}, drops=[50_000]) as srv:
        with pytest.raises(DownloadError, match=r"network failure after 1 tries .* run again to resume") as e:
            fetch(asset(srv), tmp_path, **FAST)
        assert "\n" not in str(e.value)
        assert (tmp_path / "ds.zip.part").stat().st_size == 50_000
        f = fetch(asset(srv), tmp_path, **FAST)  # the next run
    assert f.read_bytes() == ZIP
    assert srv.ranges == [None, "bytes=50000-"]


def test_server_ignoring_range_restarts_cleanly(tmp_path):
    (tmp_path / "ds.zip.part").write_bytes(ZIP[:1000])
    with FileServer({"/ds.zip": ZIP}, ignore_range=True) as srv:
        f = fetch(asset(srv), tmp_path, **FAST)
    assert f.read_bytes() == ZIP and srv.ranges == ["bytes=1000-"]


def test_checksum_mismatch_is_one_line_and_removes_the_file(tmp_path):
    with FileServer({"/ds.zip": ZIP}) as srv, pytest.raises(DownloadError, match="SHA-256 .* does not match the "
                                                                                  "published 0{64}") as e:
        fetch(asset(srv, sha256="0" * 64), tmp_path, **FAST)
    assert "\n" not in str(e.value) and srv.url("/ds.zip") in str(e.value)
    assert not any(tmp_path.iterdir())  # nothing half-trusted left behind


def test_size_mismatch_and_size_only_check(tmp_path, caplog):
    with FileServer({"/ds.zip": ZIP}) as srv:
        with pytest.raises(DownloadError, match=f"{len(ZIP)} bytes, the published size is 5"):
            fetch(asset(srv, size=5, sha256=None), tmp_path, **FAST)
        with caplog.at_level("WARNING"):
            fetch(asset(srv, sha256=None), tmp_path, **FAST)
    assert "no published SHA-256, checked by size only" in caplog.text


def test_network_failure_is_one_line(tmp_path):
    with socket.socket() as s:  # a port with nobody listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(DownloadError, match=f"127.0.0.1:{port}/x.zip: network failure after 2 tries") as e:
        fetch(Asset(f"http://127.0.0.1:{port}/x.zip"), tmp_path, **{**FAST, "retries": 1})
    assert "\n" not in str(e.value)
    with FileServer({}) as srv, pytest.raises(DownloadError, match="HTTP 404"):
        fetch(Asset(srv.url("/missing.zip")), tmp_path, **FAST)


def test_download_cli_unpacks_into_path_once(tmp_path):
    root = tmp_path / "ds"
    with FileServer({"/ds.zip": ZIP}) as srv:
        spec = {"path": str(root), "train": "images", "val": "images", "names": ["a"],
                "download": [{"url": srv.url("/ds.zip"), "size": len(ZIP), "sha256": SHA, "into": ".."}]}
        f = tmp_path / "ds.yaml"
        f.write_text(yaml.safe_dump(spec))
        with pytest.raises(FileNotFoundError, match=re.escape(f"python data/download.py {f}`")):
            check_dataset(f)  # nothing downloads unasked
        assert srv.ranges == []
        assert download_cli.main([str(f)]) == 0
        assert (root / "README.txt").read_text() == "hello" and len((root / "images" / "a.bin").read_bytes()) == 200_000
        assert not (tmp_path / "ds.zip").exists() and not (root / "ds.zip").exists()  # archive removed
        assert download_cli.main([str(f)]) == 0  # done: not fetched again
        assert srv.ranges == [None]


def test_download_cli_reports_a_bad_checksum(tmp_path, caplog):
    with FileServer({"/ds.zip": ZIP}) as srv:
        f = tmp_path / "ds.yaml"
        f.write_text(yaml.safe_dump({"path": str(tmp_path / "ds"), "train": "x", "val": "x", "names": ["a"],
                                     "download": [{"url": srv.url("/ds.zip"), "sha256": "1" * 64}]}))
        assert download_cli.main([str(f)]) == 1
    assert "does not match the published" in caplog.text


def test_unsafe_zip_member_refused(tmp_path):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("../evil.txt", "x")
    data = buf.getvalue()
    with FileServer({"/e.zip": data}) as srv, pytest.raises(DownloadError, match="outside"):
        download_dataset(tmp_path / "ds", [Asset(srv.url("/e.zip"), len(data), hashlib.sha256(data).hexdigest())],
                         **FAST)
    assert not (tmp_path / "evil.txt").exists()


@pytest.mark.parametrize("name,checksummed", [("coco", True), ("voc", True), ("coco128", False)])
def test_shipped_yamls_list_their_downloads(name, checksummed):
    f = download_cli.dataset_yaml(name)
    assets = parse_assets(yaml.safe_load(f.read_text())["download"], str(f))
    assert all(a.url.startswith("http") for a in assets)
    assert all((a.sha256 is not None and a.size is not None) == checksummed for a in assets)


def test_bad_download_entries():
    with pytest.raises(ValueError, match="unknown key"):
        parse_assets([{"url": "http://x/y.zip", "md5": "abc"}], "d.yaml")
    with pytest.raises(ValueError, match="64 hex digits"):
        parse_assets([{"url": "http://x/y.zip", "sha256": "abc"}], "d.yaml")


def test_tar_archives_unpack(tmp_path):
    """VOC ships as tar files."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        info = tarfile.TarInfo("VOCdevkit/VOC2007/ImageSets/Main/test.txt")
        info.size = 7
        t.addfile(info, io.BytesIO(b"000001\n"))
    data = buf.getvalue()
    with FileServer({"/v.tar": data}) as srv:
        download_dataset(tmp_path, [Asset(srv.url("/v.tar"), len(data), hashlib.sha256(data).hexdigest())], **FAST)
    assert (tmp_path / "VOCdevkit" / "VOC2007" / "ImageSets" / "Main" / "test.txt").read_text() == "000001\n"
