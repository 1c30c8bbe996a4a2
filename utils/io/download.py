"""Dataset downloads, run only on request (``python data/download.py coco``; nothing else downloads): each file of
a data YAML's ``download:`` list fetched over HTTP(S) into ``<path>/<name>.part``, resumed with an HTTP Range
request after a dropped connection or an interrupted run, checked against its published size and SHA-256, then
unpacked (zip, tar) into the dataset folder.

A ``download:`` entry: ``{url: ..., size: <bytes>, sha256: <hex>, into: <folder relative to path, default .>}``.
Where no checksum is published, the entry has none and the log says the file is checked by size only (and by
the archive's own CRCs while unpacking, for a zip). Every failure is one line: the URL or file, what went wrong,
what to do.
"""
from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import ssl
import tarfile
import time
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from utils import LOGGER

CHUNK = 1 << 20  # bytes per read
RETRIES = 5  # reconnects (each resuming where the last stopped) before a network failure is reported
TIMEOUT_S = 60.0  # socket timeout per connect / read
BACKOFF_S = 1.0  # first wait between reconnects, doubled each time (capped at 30 s)


NETWORK_ERRORS = (urllib.error.URLError, ConnectionError, TimeoutError, http.client.HTTPException, ssl.SSLError)


class DownloadError(RuntimeError):
    """A download that could not complete or verify; the message is one line naming the URL or file."""


@dataclass(frozen=True)
class Asset:
    """One file of a ``download:`` list."""

    url: str
    size: int | None = None  # published size in bytes
    sha256: str | None = None  # published SHA-256, lower-case hex
    into: str = "."  # unpack into this folder, relative to the dataset path

    @property
    def name(self) -> str:
        return self.url.rstrip("/").rsplit("/", 1)[-1].split("?")[0]


def parse_assets(download, source: str = "download") -> list[Asset]:
    """The ``download:`` list of a data YAML as Assets; a wrong entry is a one-line error naming ``source``."""
    if not isinstance(download, list) or not download:
        raise ValueError(f"{source}: 'download' must be a list of {{url, size, sha256}} entries, got {download!r}")
    assets = []
    for i, e in enumerate(download):
        if not isinstance(e, dict) or not isinstance(e.get("url"), str):
            raise ValueError(f"{source}: download entry {i} needs a 'url', got {e!r}")
        unknown = set(e) - {"url", "size", "sha256", "into"}
        if unknown:
            raise ValueError(f"{source}: download entry {i} has unknown key(s) {sorted(unknown)} "
                             f"(valid: url, size, sha256, into)")
        sha = e.get("sha256")
        if sha is not None and (not isinstance(sha, str) or len(sha) != 64):
            raise ValueError(f"{source}: download entry {i}: sha256 must be 64 hex digits, got {sha!r}")
        assets.append(Asset(e["url"], int(e["size"]) if e.get("size") is not None else None,
                            sha.lower() if sha else None, str(e.get("into") or ".")))
    return assets


# ------------------------------------------------------------------ fetch
def fetch(asset: Asset, folder: Path, retries: int = RETRIES, timeout: float = TIMEOUT_S,
          backoff: float = BACKOFF_S) -> Path:
    """``folder/<name>`` downloaded and verified; a ``.part`` left by an earlier try is resumed."""
    folder.mkdir(parents=True, exist_ok=True)
    target, part = folder / asset.name, folder / f"{asset.name}.part"
    if target.is_file():
        verify(target, asset)
        return target
    for attempt in range(retries + 1):
        try:
            _get(asset, part, timeout)
            break
        except NETWORK_ERRORS as e:
            if isinstance(e, urllib.error.HTTPError) and e.code < 500 and e.code != 408:
                raise DownloadError(f"{asset.url}: HTTP {e.code} {e.reason}") from None
            if attempt == retries:
                have = part.stat().st_size if part.is_file() else 0
                raise DownloadError(f"{asset.url}: network failure after {retries + 1} tries "
                                    f"({type(e).__name__}: {getattr(e, 'reason', e)}); {have} bytes kept in "
                                    f"{part}, run again to resume") from None
            wait = min(backoff * 2 ** attempt, 30.0)
            LOGGER.warning(f"WARNING: {asset.name}: {type(e).__name__}: {getattr(e, 'reason', e)}; "
                           f"resuming in {wait:g} s ({attempt + 1}/{retries})")
            time.sleep(wait)
    verify(part, asset)
    os.replace(part, target)
    return target


def _get(asset: Asset, part: Path, timeout: float) -> None:
    """One request: the rest of the file from the ``.part``'s size (Range), appended; a server that answers
    200 to a Range request sends it all again, so the part is restarted."""
    have = part.stat().st_size if part.is_file() else 0
    if asset.size is not None and have > asset.size:
        LOGGER.warning(f"WARNING: {part} is larger than the published {asset.size} bytes, starting again")
        part.unlink()
        have = 0
    if asset.size is not None and have == asset.size:
        return
    req = urllib.request.Request(asset.url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        resp = urllib.request.urlopen(req, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # nothing after `have`: the part is complete (verified by the caller)
            return
        raise
    with resp:
        resumed = have and resp.status == 206 and resp.headers.get("Content-Range", "").startswith(f"bytes {have}-")
        if have and not resumed:
            LOGGER.info(f"{asset.name}: the server does not resume (HTTP {resp.status}), downloading from the start")
            have = 0
        length = resp.headers.get("Content-Length")
        total = have + int(length) if length is not None else asset.size
        with open(part, "ab" if resumed else "wb") as f, tqdm(total=total, initial=have, unit="B", unit_scale=True,
                                                              desc=asset.name, disable=None) as bar:
            while chunk := resp.read(CHUNK):
                f.write(chunk)
                bar.update(len(chunk))
        got = part.stat().st_size
        if total is not None and got < total:  # the connection ended early without an error
            raise ConnectionError(f"connection closed at {got} of {total} bytes")


def sha256sum(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def verify(path: Path, asset: Asset) -> None:
    """Size and SHA-256 against the published ones; a mismatching file is removed (the next run fetches it
    anew) and reported in one line."""
    size = path.stat().st_size
    if asset.size is not None and size != asset.size:
        path.unlink()
        raise DownloadError(f"{path.name}: {size} bytes, the published size is {asset.size}; removed, run again "
                            f"to download it anew ({asset.url})")
    if asset.sha256 is None:
        LOGGER.warning(f"WARNING: {path.name}: no published SHA-256, checked by "
                       f"{'size only' if asset.size is not None else 'nothing but its archive CRCs'}")
        return
    got = sha256sum(path)
    if got != asset.sha256:
        path.unlink()
        raise DownloadError(f"{path.name}: SHA-256 {got} does not match the published {asset.sha256}; removed, "
                            f"run again to download it anew ({asset.url})")
    LOGGER.info(f"{path.name}: SHA-256 verified")


# ------------------------------------------------------------------ unpack
def unpack(archive: Path, into: Path) -> None:
    """A zip or tar archive unpacked into ``into``; members that would land outside it are an error."""
    into.mkdir(parents=True, exist_ok=True)
    base = into.resolve()
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as z:
            bad = [m for m in z.namelist() if not (base / m).resolve().is_relative_to(base)]
            if bad:
                raise DownloadError(f"{archive}: member {bad[0]!r} would be written outside {into}")
            try:
                z.extractall(into)
            except zipfile.BadZipFile as e:  # a member's CRC-32 does not match
                raise DownloadError(f"{archive}: damaged archive ({e}); delete it and run again") from None
    elif tarfile.is_tarfile(archive):
        with tarfile.open(archive) as t:
            if not hasattr(tarfile, "data_filter"):  # Python < 3.11.4: check the members ourselves
                bad = [m.name for m in t.getmembers() if not (base / m.name).resolve().is_relative_to(base)
                       or m.issym() or m.islnk() or m.isdev()]
                if bad:
                    raise DownloadError(f"{archive}: member {bad[0]!r} is a link, a device or outside {into}")
                t.extractall(into)
                return
            try:
                t.extractall(into, filter="data")
            except tarfile.FilterError as e:
                raise DownloadError(f"{archive}: unsafe member ({e})") from None
    else:
        shutil.copy2(archive, into / archive.name)


def download_dataset(root: Path, assets: list[Asset], keep: bool = False, **fetch_kw) -> Path:
    """Fetch, verify and unpack every asset into ``root`` (its ``into`` folder); a finished asset (marked in
    ``root/.downloads/``) is skipped on a later run; archives are removed after unpacking unless ``keep``."""
    done_dir = root / ".downloads"
    for a in assets:
        marker = done_dir / f"{a.name}.done"
        if marker.is_file():
            LOGGER.info(f"{a.name}: already downloaded and unpacked ({marker})")
            continue
        archive = fetch(a, root, **fetch_kw)
        LOGGER.info(f"{a.name}: unpacking into {(root / a.into).resolve()}")
        unpack(archive, root / a.into)
        done_dir.mkdir(parents=True, exist_ok=True)
        marker.write_text(f"{a.url}\n{a.sha256 or '-'}\n")
        if not keep:
            archive.unlink()
    return root
