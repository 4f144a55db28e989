"""This process's own folder for files: Gradio's upload folder (GRADIO_TEMP_DIR), which also holds the UI's
exports, the one rule every file argument must pass, and the bound on the disk all of it takes.

Why a rule of our own: a Gradio file argument is a `FileData` that names a path, and Gradio's check that the
path is an upload (`processing_utils._check_allowed`) only runs after `Blocks.launch()`; our Blocks are
mounted on our FastAPI app instead, so without this module any file the process can read would be copied
into the cache and read (README "Security").

Layout (the root is a private `mkdtemp`, 0700; the server's umask 077 keeps everything below it private):

    wenmo-files-XXXX/
      <sha256 hex>/<name>       an upload, as Gradio stores it (POST /gradio_api/upload)
      export-<uuid>/vectors.*   the Vectors tab's downloads, written here so Gradio serves them as they are
                                (a file outside its cache would be copied in: twice the disk)
      tmpXXXX                   an upload still arriving (Gradio's multipart parser writes it here first)

The bound: before an upload is stored or an export written, its size (an upper bound) is reserved; when the
files on disk plus the reservations would pass `max_file_store_mib`, the oldest files are removed first,
down to 90 % of the cap so the next request does not rescan at once. A request that cannot fit even then —
it alone is larger than the cap, or uploads in progress hold the rest — is refused (507).

Imports no gradio: the server creates the store, and points GRADIO_TEMP_DIR at it, before gradio loads.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import stat
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from app.errors import FileRejectedError, StoreFullError
from app.web.boundary import send_error

log = logging.getLogger(__name__)

UPLOAD_ROUTE = "/gradio_api/upload"
LOW_WATER_RATIO = 0.9  # prune down to this share of the cap: one rescan per tenth of the cap, not per request
PART_SLACK_BYTES = 8192  # one file's last partial block plus its folder, which a Content-Length does not count
STALE_PART_S = 3600.0  # a half-written upload older than this was abandoned (its request is long gone)
EMPTY_DIR_GRACE_S = 60.0  # Gradio creates an upload's folder just before it moves the file in
MAX_AGE_S = 3600.0  # the default of max_file_store_age_s: uploads and exports are kept an hour at most (README
# "Security"), refused, then removed. Shorter: less disk and memory in their bookkeeping; a soak reaches its
# steady state sooner (the store is full of files of every age from then on).
# Expired files are looked for at most this often, or at the next reservation after one was refused for its
# age. A scan stats every file in the store, and under a steady stream of Vectors-tab calls (an export folder
# each, kept an hour) a scan per call grew with every call: in time (ms per call) and in resident memory (the
# scan's transient objects, thousands per call, left the Python heap's arenas fragmented).
EXPIRY_SCAN_S = 30.0
_UPLOAD_DIR = re.compile(r"[0-9a-f]{64}")  # Gradio names an upload's folder by the sha256 of its bytes

class FileStore:
    def __init__(self, max_bytes: int, *, max_files_per_upload: int = 10, root: Path | None = None,
                 max_age_s: float = MAX_AGE_S) -> None:
        if root is None:
            root = Path(tempfile.mkdtemp(prefix="wenmo-files-"))  # 0700, ours alone
        root.mkdir(parents=True, exist_ok=True)
        os.chmod(root, 0o700)
        # Resolved once, so a TMPDIR behind a symlink compares equal to the resolved argument paths.
        self.root = Path(os.path.realpath(root))
        self.max_bytes = max_bytes
        self.max_age_s = max_age_s
        self.max_files_per_upload = max_files_per_upload
        self._lock = threading.Lock()
        self._on_disk = 0  # an upper bound: exact after each scan, plus what each finished request stored
        self._reserved: dict[int, int] = {}
        self._next_ticket = 0
        self.pruned_files = 0
        self.scans = 0
        self._next_expiry_scan = float("-inf")  # time.monotonic() from which a reservation scans for expired files
        # Told the paths of the files each prune removed (Gradio remembers every file it served until its own
        # clean-up removes it: app/web/ui/blocks.py `forget_files`).
        self.on_removed: list[Callable[[list[str]], None]] = []

    # ---- the rule for file arguments ---------------------------------------------------------------------
    def upload_path(self, path: Any) -> Path:
        """The upload `path` names, resolved (links followed); FileRejectedError for anything else.

        Nothing outside the folder is opened or stat()ed beyond what resolving the name takes, and the error
        is the same whether such a file exists or not."""
        if not isinstance(path, str) or not path or "\x00" in path:
            raise FileRejectedError()
        real = os.path.realpath(path)
        rel = os.path.relpath(real, self.root)
        parts = rel.split(os.sep)
        if len(parts) != 2 or not _UPLOAD_DIR.fullmatch(parts[0]) or parts[1].startswith("."):
            raise FileRejectedError()
        try:
            st = os.stat(real, follow_symlinks=False)
        except OSError:
            raise FileRejectedError() from None
        if not stat.S_ISREG(st.st_mode):
            raise FileRejectedError()
        if time.time() - st.st_mtime > self.max_age_s:
            self._next_expiry_scan = float("-inf")  # expired files exist: the next reservation removes them
            raise FileRejectedError()
        return Path(real)

    def check_file_args(self, value: Any) -> None:
        """Every file object (a dict with a "path", the shape Gradio moves into its cache) anywhere in one
        event input must name an upload. Iterative: a hostile input may nest deeper than Python recurses."""
        pending = [value]
        while pending:
            item = pending.pop()
            if isinstance(item, dict):
                if "path" in item:
                    self.upload_path(item["path"])
                pending.extend(item.values())
            elif isinstance(item, (list, tuple)):
                pending.extend(item)

    def read_upload(self, path: Any) -> tuple[str, bytes]:
        """(file name, bytes) of an upload; a file pruned between the check and the read gets the same
        message."""
        real = self.upload_path(path)
        try:
            return real.name, real.read_bytes()
        except OSError:
            raise FileRejectedError() from None

    # ---- the disk bound ----------------------------------------------------------------------------------
    def reserve(self, nbytes: int, *, what: str) -> int:
        """Room for `nbytes` more (an upper bound); a ticket for `release`. StoreFullError if it cannot fit."""
        cap = self.max_bytes
        if nbytes > cap:
            raise StoreFullError(
                f"文件存储空间不足 (file store full): {what} needs up to {_mib(nbytes)} MiB, more than the whole "
                f"file store ({_mib(cap)} MiB, --max-file-store-mib / WENMO_MAX_FILE_STORE_MIB); send a smaller "
                "request (fewer or smaller files, fewer texts), or ask the operator to raise the limit")
        with self._lock:
            reserved = sum(self._reserved.values())
            # A new file is a moment to remove what has expired (an upload or export older than max_age_s), at
            # most every EXPIRY_SCAN_S; Gradio's own clean-up only runs every ten minutes and ages files by ctime.
            if time.monotonic() >= self._next_expiry_scan:
                self._on_disk = self._prune(None)
            if self._on_disk + reserved + nbytes > cap:
                self._on_disk = self._prune(int(cap * LOW_WATER_RATIO) - reserved - nbytes)
                if self._on_disk + reserved + nbytes > cap:
                    raise StoreFullError(
                        f"文件存储空间暂满 (file store busy): uploads in progress hold {_mib(reserved)} MiB of the "
                        f"{_mib(cap)} MiB file store (WENMO_MAX_FILE_STORE_MIB) and {what} needs up to "
                        f"{_mib(nbytes)} MiB; retry in a moment")
            self._next_ticket += 1
            self._reserved[self._next_ticket] = nbytes
            return self._next_ticket

    def release(self, ticket: int, stored: list[Path] | None) -> None:
        """The request is over: count what it stored (`None`: unknown, count the whole reservation)."""
        with self._lock:
            nbytes = self._reserved.pop(ticket, 0)
            if stored is not None:
                nbytes = sum(_disk_bytes(p) + _disk_bytes(p.parent) for p in stored)
            self._on_disk += nbytes

    @contextlib.contextmanager
    def export_dir(self, nbytes: int) -> Iterator[Path]:
        """A fresh folder for one request's exports of at most `nbytes`, counted in the store."""
        ticket = self.reserve(nbytes, what="this export")
        folder = self.root / f"export-{uuid.uuid4().hex}"
        try:
            folder.mkdir(mode=0o700)
            yield folder
        finally:
            written = [p for p in folder.iterdir()] if folder.is_dir() else []
            self.release(ticket, written)

    def _scan(self, now: float) -> tuple[list[tuple[int, int, Path]], list[Path]]:
        """(prunable files as (mtime_ns, bytes, path), empty folders old enough to remove)."""
        files: list[tuple[int, int, Path]] = []
        empty: list[Path] = []
        with os.scandir(self.root) as top:
            for entry in top:
                try:
                    st = entry.stat(follow_symlinks=False)
                    if entry.is_dir(follow_symlinks=False):
                        with os.scandir(entry.path) as inner:
                            children = list(inner)
                        for child in children:
                            cst = child.stat(follow_symlinks=False)
                            files.append((cst.st_mtime_ns, _blocks(cst), Path(child.path)))
                        if not children and now - st.st_mtime > EMPTY_DIR_GRACE_S:
                            empty.append(Path(entry.path))
                    elif now - st.st_mtime > STALE_PART_S:
                        files.append((st.st_mtime_ns, _blocks(st), Path(entry.path)))
                    else:  # an upload still arriving: counted (its reservation counts it too), never removed
                        files.append((-1, _blocks(st), Path(entry.path)))
                except FileNotFoundError:
                    continue
        return files, empty

    def _scan_dirs_bytes(self) -> int:
        total = 0
        with os.scandir(self.root) as top:
            for entry in top:
                with contextlib.suppress(FileNotFoundError):
                    if entry.is_dir(follow_symlinks=False):
                        total += _blocks(entry.stat(follow_symlinks=False))
        return total

    def _prune(self, target: int | None) -> int:
        """Remove every file older than max_age_s, then the oldest until the store takes at most `target` bytes
        (None: only the expired); the bytes left."""
        now = time.time()
        expired_before_ns = int((now - self.max_age_s) * 1e9)
        files, empty = self._scan(now)
        self.scans += 1
        self._next_expiry_scan = time.monotonic() + EXPIRY_SCAN_S
        for folder in empty:
            with contextlib.suppress(OSError):
                folder.rmdir()
        used = sum(size for _m, size, _p in files) + self._scan_dirs_bytes()
        removed: list[str] = []
        for mtime, size, path in sorted(files, key=lambda f: f[0]):
            if mtime < 0:  # an upload still arriving
                continue
            if mtime >= expired_before_ns and (target is None or used <= target):
                break  # oldest first: nothing later has expired either
            parent = path.parent
            try:
                path.unlink()
            except FileNotFoundError:
                pass
            except OSError as e:
                log.warning("event=file_store_prune_failed path=%s error=%s", path, e)
                continue
            used -= size
            removed.append(str(path))
            if parent != self.root:
                with contextlib.suppress(OSError):
                    dir_bytes = _disk_bytes(parent)
                    parent.rmdir()  # only when empty: the folder of an upload, or of an export
                    used -= dir_bytes
        if removed:
            self.pruned_files += len(removed)
            log.info("event=file_store_pruned files=%d used_mib=%.1f cap_mib=%g", len(removed), used / 2**20,
                     self.max_bytes / 2**20)
            for tell in self.on_removed:
                tell(removed)
        return used

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def _blocks(st: os.stat_result) -> int:
    return getattr(st, "st_blocks", 0) * 512 or st.st_size


def _disk_bytes(path: Path) -> int:
    try:
        return _blocks(os.stat(path, follow_symlinks=False))
    except OSError:
        return 0


def _mib(nbytes: int) -> str:
    return f"{nbytes / 2**20:.1f}"


class UploadStoreGate:
    """ASGI middleware in front of Gradio's upload route: reserve room for the upload in the file store before
    Gradio writes a byte, and count what it stored afterwards. 507 when it cannot fit."""

    def __init__(self, app: Any, store: FileStore, max_request_bytes: int) -> None:
        self.app = app
        self.store = store
        self.max_request_bytes = max_request_bytes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"].rstrip("/") != UPLOAD_ROUTE:
            await self.app(scope, receive, send)
            return
        import anyio

        # Without a Content-Length (chunked) the body can be as large as the per-request cap allows.
        declared = _content_length(scope) or self.max_request_bytes
        need = min(declared, self.max_request_bytes) + PART_SLACK_BYTES * self.store.max_files_per_upload
        try:
            ticket = await anyio.to_thread.run_sync(
                lambda: self.store.reserve(need, what="this upload"))
        except StoreFullError as e:
            await _send_error(send, e)
            return
        status = 0
        body = bytearray()

        async def capture(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body" and status == 200 and len(body) < 1 << 20:
                body.extend(message.get("body", b""))
            await send(message)

        stored: list[Path] | None = None
        try:
            await self.app(scope, receive, capture)
            if status == 200:
                with contextlib.suppress(ValueError, TypeError):
                    stored = [Path(p) for p in json.loads(bytes(body)) if isinstance(p, str)]
            # Refused (too large, a bad form): what it may have left half-written is counted as the whole
            # reservation until the next scan finds it.
        finally:
            await anyio.to_thread.run_sync(lambda: self.store.release(ticket, stored))


def _content_length(scope: dict) -> int:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            with contextlib.suppress(ValueError):
                return max(0, int(value))
    return 0


async def _send_error(send: Any, e: StoreFullError) -> None:
    # Connection: close — the client may still be sending the body we will not read.
    await send_error(send, e, keep_headers=[(b"connection", b"close")])
