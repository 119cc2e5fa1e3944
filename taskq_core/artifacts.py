"""The artifact store: where the files tasks write (`ctx.artifact`) are kept, and how one attempt's
files are written, published with its outcome, or thrown away.

The store is a URL (`TASKQ_ARTIFACTS_URL`): a local folder (a path or `file://...`) by default,
or S3-compatible object storage (`s3://bucket/prefix`, through fsspec's s3fs, credentials and
endpoint from the usual `AWS_*` variables). Each attempt writes under `<task id>/<attempt>/`, so
attempts never overwrite each other; what makes an artifact visible is its row in
`task_artifacts`, written in the same statement as the attempt's `completed` outcome. A failed
attempt's files are deleted; a task's whole prefix goes when the task is deleted.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, BinaryIO, cast

from taskq_core.settings import Settings

if TYPE_CHECKING:
    from fsspec.spec import AbstractFileSystem

log = logging.getLogger("taskq.artifacts")

# One path segment: no separators, no leading dot (so neither `..` nor hidden files), printable.
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+=@,-]{0,199}$")
CONTENT_TYPE_PATTERN = re.compile(r"^[\w.+-]+/[\w.+-]+(\s*;\s*[\w.+-]+=[\w.+\"-]+)*$")
READ_CHUNK = 1024 * 1024  # bytes per read when streaming an artifact back
MAX_ARTIFACTS = 100  # per attempt: each is a row and a stored object
# Bytes an object store upload holds before it sends a part: the writer's memory (s3fs keeps
# a few copies of it while a part goes out). S3 allows 10,000 parts: up to 160 GiB a file.
UPLOAD_PART = 16 * 1024 * 1024


class ArtifactNameError(ValueError):
    """An artifact name that is not one safe path segment (letters, digits, `._+=@,-`, no
    leading dot, at most 200 characters)."""


def check_name(name: str) -> str:
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise ArtifactNameError(
            f"artifact name {name!r} is not allowed: use 1-200 letters, digits and ._+=@,- "
            "not starting with a dot (one file name, no folders)"
        )
    return name


def check_content_type(content_type: str) -> str:
    if not isinstance(content_type, str) or not CONTENT_TYPE_PATTERN.fullmatch(content_type):
        raise ValueError(f"content type {content_type!r} is not a media type like text/csv")
    return content_type


def configured_url(settings: Settings) -> str:
    """The store this process uses: TASKQ_ARTIFACTS_URL, or the data folder's `artifacts/`."""
    return settings.artifacts_url or default_url(settings.data_dir)


def default_url(data_dir: Path | None) -> str:
    """The local folder used when TASKQ_ARTIFACTS_URL is unset: `artifacts/` in the data folder
    (the one `taskq dev` keeps its servers in)."""
    if data_dir is None:
        from taskq_core.embedded.servers import default_data_dir  # only when needed: lazy

        data_dir = default_data_dir()
    return str(Path(data_dir).expanduser().resolve() / "artifacts")


class ArtifactStore:
    """The store at `url`; every key is relative to it (`<task id>/<attempt>/<name>`)."""

    def __init__(self, url: str) -> None:
        # Here, not at the top: a worker imports this module, and fsspec costs its start-up time
        # whether or not a task ever writes an artifact.
        import fsspec

        self.url = url
        if "://" not in url or url.startswith("file://"):
            path = url.removeprefix("file://")
            os.makedirs(path, mode=0o700, exist_ok=True)
            self.fs: AbstractFileSystem = fsspec.filesystem("file", auto_mkdir=True)
            self.root = str(Path(path).resolve())
            self.local = True
        else:
            fs, root = fsspec.core.url_to_fs(url)
            self.fs = fs
            self.root = root.rstrip("/")
            self.local = False

    def path(self, key: str) -> str:
        return f"{self.root}/{key}"

    def open_write(self, key: str) -> Any:
        if self.local:
            return self.fs.open(self.path(key), "wb")
        return self.fs.open(self.path(key), "wb", block_size=UPLOAD_PART)

    def size(self, key: str) -> int:
        return int(self.fs.size(self.path(key)))

    def read(self, key: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        """The bytes of `key` from `start` up to `end` (exclusive; None: to the end), in chunks."""
        with self.fs.open(self.path(key), "rb") as f:
            f.seek(start)
            left = None if end is None else end - start
            while left is None or left > 0:
                chunk = f.read(READ_CHUNK if left is None else min(READ_CHUNK, left))
                if not chunk:
                    return
                if left is not None:
                    left -= len(chunk)
                yield chunk

    def delete_prefix(self, prefix: str) -> None:
        """Delete every object under `prefix` (a task's, an attempt's or one file's key), and
        abort the uploads begun there and never finished; missing is fine."""
        path = self.path(prefix.strip("/"))
        if self.multipart:
            self._abort_uploads(path)
        try:
            if self.fs.exists(path):
                self.fs.rm(path, recursive=True)
        except FileNotFoundError:
            pass

    @property
    def multipart(self) -> bool:
        """Whether files go up in parts (S3): an upload cut off keeps its parts until aborted."""
        protocol = self.fs.protocol
        return not self.local and "s3" in ((protocol,) if isinstance(protocol, str) else protocol)

    def _abort_uploads(self, path: str) -> None:
        # An upload whose own abort failed (the store was unreachable when its attempt failed)
        # is no object, so `rm` never sees it, yet the store keeps (and bills) its parts.
        fs: Any = self.fs
        bucket, _, key = path.partition("/")
        request = {"Bucket": bucket, "Prefix": key}
        while True:
            page = fs.call_s3("list_multipart_uploads", **request)
            for upload in page.get("Uploads", []):
                if upload["Key"] == key or upload["Key"].startswith(f"{key}/"):
                    fs.call_s3(
                        "abort_multipart_upload",
                        Bucket=bucket,
                        Key=upload["Key"],
                        UploadId=upload["UploadId"],
                    )
            if not page.get("IsTruncated"):
                return
            request.update(
                KeyMarker=page["NextKeyMarker"], UploadIdMarker=page["NextUploadIdMarker"]
            )


def task_prefix(task_id: int) -> str:
    return f"{task_id}"


def attempt_prefix(task_id: int, attempt: int) -> str:
    return f"{task_id}/{attempt}"


class ArtifactWriter(io.RawIOBase):
    """A streaming binary writer into the store that hashes and counts what it writes. Closing
    it finishes the file; leaving its `with` block by an exception discards it."""

    def __init__(self, attempt: AttemptArtifacts, name: str, content_type: str) -> None:
        super().__init__()
        self._attempt = attempt
        self.name_ = name
        self.content_type = content_type
        self.key = f"{attempt.prefix}/{name}"
        self._file = attempt.store.open_write(self.key)
        self._hash = hashlib.sha256()
        self._size = 0
        self._state = "open"  # then "done" or "discarded"

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        if self._state != "open":
            raise ValueError(f"artifact {self.name_!r} is closed")
        view = memoryview(data).cast("B")
        self._hash.update(view)
        self._file.write(view)
        self._size += len(view)
        return len(view)

    def close(self) -> None:
        """Finish the file: it is published with the attempt's outcome if the task completes."""
        if self._state == "open":
            self._file.close()
            self._state = "done"
            self._attempt.finished(self._record())
        super().close()

    def discard(self) -> None:
        """Throw the file away (the task failed while writing it)."""
        if self._state == "open":
            self._state = "discarded"
            try:
                if self._attempt.store.local:
                    self._file.close()
                else:
                    self._file.discard()  # an unfinished multipart upload is aborted
                    self._file.closed = True  # so that nothing uploads what is left on close
            finally:
                self._attempt.store.delete_prefix(self.key)
        super().close()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is not None:
            self.discard()
        else:
            self.close()

    def _record(self) -> dict[str, Any]:
        return {
            "name": self.name_,
            "content_type": self.content_type,
            "size": self._size,
            "sha256": self._hash.hexdigest(),
            "key": self.key,
        }


class AttemptArtifacts:
    """The artifacts one attempt writes: handed out by `open`, finished as they close, published
    (`published`) if the attempt completes, else deleted (`discard`)."""

    def __init__(
        self, store_url: str | Callable[[], str] | None, task_id: int, attempt: int
    ) -> None:
        self._store_url = store_url  # a callable is asked only when an artifact is written
        self._store: ArtifactStore | None = None
        self.prefix = attempt_prefix(task_id, attempt)
        self._open: dict[str, ArtifactWriter] = {}
        self._done: dict[str, dict[str, Any]] = {}

    @property
    def store(self) -> ArtifactStore:
        if self._store is None:
            url = self._store_url() if callable(self._store_url) else self._store_url
            if url is None:
                raise RuntimeError("no artifact store is configured (TASKQ_ARTIFACTS_URL)")
            self._store = ArtifactStore(url)
        return self._store

    def open(self, name: str, content_type: str) -> BinaryIO:
        check_name(name)
        check_content_type(content_type)
        if name in self._open or name in self._done:
            raise ValueError(f"artifact {name!r} was already written by this attempt")
        if len(self._open) + len(self._done) >= MAX_ARTIFACTS:
            raise ValueError(f"an attempt may write at most {MAX_ARTIFACTS} artifacts")
        writer = self._open[name] = ArtifactWriter(self, name, content_type)
        return cast(BinaryIO, writer)

    def finished(self, record: dict[str, Any]) -> None:
        self._open.pop(record["name"], None)
        self._done[record["name"]] = record

    def published(self) -> list[dict[str, Any]]:
        """The attempt completed: finish any writer left open; the records to publish."""
        for writer in list(self._open.values()):
            writer.close()
        return list(self._done.values())

    def delete_other(self, prefix: str) -> None:
        """Delete another attempt's files (best effort: what remains goes with the task)."""
        if not self._done:
            return  # nothing written: the store may not even be configured
        try:
            self.store.delete_prefix(prefix)
        except Exception as exc:
            log.warning("deleting %s failed (it goes with its task): %r", prefix, exc)

    def discard(self) -> None:
        """The attempt did not complete: delete whatever it wrote (best effort: what remains
        goes with the task)."""
        for writer in list(self._open.values()):
            try:
                writer.discard()
            except Exception as exc:
                log.warning("discarding artifact %s failed: %r", writer.key, exc)
        self._open.clear()
        if self._done or self._store is not None:
            self._done.clear()
            try:
                self.store.delete_prefix(self.prefix)
            except Exception as exc:
                log.warning("deleting %s failed (it goes with its task): %r", self.prefix, exc)
