"""The output folder switched whole: a run builds a new version and one rename makes it the live one.

``public`` is a symbolic link to a version folder, ``public.versions/<id>/``.  A run that changes
anything builds the next version beside the current one (every unchanged file a hard link to the
current one's, so an incremental build copies nothing), writes its changed files and removes the
stale ones there, then points ``public`` at it by renaming a new link over the old one: rename(2)
is atomic, so a reader, a web server, or a run killed at any instant finds ``public`` wholly the
previous set or wholly the new one, never a mix.  The previous version is kept until the next run
that changes something (a request being served from it finishes), which makes it its new version:
renamed, and made the same as the live one where they differ (``_copy_of``), instead of copying the
whole live tree and deleting the old one; any other version, and a half-built one a killed run left
behind, is deleted by the next run that switches.

An output folder that is a real directory (made by an older version of the pipeline, or by hand)
becomes the first kept version: on Linux it is exchanged with the link in one step
(renameat2 ``RENAME_EXCHANGE``); elsewhere it is moved aside just before the link takes its name.
When ``public`` is the operator's own link to another folder (``public -> /srv/www``), that folder
is the one switched, and the operator's link keeps working.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from ..errors import PipelineError
from .atomic import write_atomic

log = logging.getLogger(__name__)

VERSIONS_SUFFIX = ".versions"
_TEMP_MARK = ".switch-"  # temporary links (and a moved-aside legacy folder) beside the output folder


def versions_folder(switched: Path) -> Path:
    return switched.with_name(switched.name + VERSIONS_SUFFIX)


@dataclass
class Published:
    """What one switch changed, named by the paths the run planned (``public/...``)."""

    written: list[Path] = field(default_factory=list)
    removed: list[Path] = field(default_factory=list)
    version: Path | None = None  # the version folder now live; None when nothing changed (no switch)


def switch_point(out: Path) -> Path:
    """The name that is switched: ``out`` itself, or the folder the operator's own link leads to."""
    path = out
    for _ in range(40):  # as many links as the kernel follows
        if not path.is_symlink():
            return path
        target = Path(os.path.normpath(path.parent / os.readlink(path)))
        if target.parent.name.endswith(VERSIONS_SUFFIX):  # a switch link (perhaps renamed since)
            return path
        path = target
    raise PipelineError(f"{out}: too many levels of symbolic links")


def live_version(out: Path) -> str:
    """The name of the version ``out`` shows; "" for a real folder or none."""
    switched = switch_point(out)
    return Path(os.readlink(switched)).name if switched.is_symlink() else ""


def current_version(switched: Path) -> Path | None:
    """The folder the live set is read from: a version, a real (legacy) directory, or None (none yet)."""
    if switched.is_symlink():
        return Path(os.path.normpath(switched.parent / os.readlink(switched)))
    if switched.is_dir():
        return switched
    if switched.exists():
        raise PipelineError(f"{switched}: the output folder is a file, not a folder")
    return None


def publish(out: Path, files: dict[Path, bytes], stale: Iterable[Path] = (),
            record: Callable[[str], None] | None = None) -> Published:
    """Make ``files`` (keyed by paths under ``out``) the live set, without ``stale``, in one switch.

    Files whose bytes did not change are neither written nor counted; when nothing changed and
    nothing is stale, no version is made at all.  Files planned outside ``out`` are written in place.
    ``record`` is called with the name of the version about to be live (the new one, just before the
    switch; the live one when nothing changed), to record what it holds.
    """

    switched = switch_point(out)
    current = current_version(switched)
    inside: dict[Path, bytes] = {}
    outside: dict[Path, bytes] = {}
    for path, data in files.items():
        (inside if path.is_relative_to(out) else outside)[path] = data
    result = Published(written=[path for path, data in outside.items() if write_atomic(path, data)])
    changed = {path: data for path, data in inside.items()
               if current is None or not _holds(current / path.relative_to(out), data)}
    gone = [path for path in stale if current is not None and _relative(path, out, current) is not None]
    if not changed and not gone and (current is None or switched.is_symlink()):
        if record is not None:
            record(live_version(out))
        return result
    linked = switched.is_symlink() and current is not None
    versions = current.parent if linked and current is not None else versions_folder(switched)
    versions.mkdir(parents=True, exist_ok=True)
    version = versions / _new_id()
    log.debug("building %s: %d files changed, %d removed", version, len(changed), len(gone))
    try:
        if current is not None:
            _copy_of(current, version)
        else:
            version.mkdir()
        for path, data in changed.items():
            _write(version / path.relative_to(out), data)
        _sync_files(version, [version / path.relative_to(out) for path in changed])
        for path in gone:
            rel = _relative(path, out, current)
            if rel is not None:
                _remove(version, rel)
        if record is not None:
            record(version.name)
    except BaseException:
        shutil.rmtree(version, ignore_errors=True)
        raise
    before = _switch(switched, version)
    log.debug("%s now shows %s", switched, version.name)
    if current is not None and current.parent == versions:
        before = current
    keep = {version.name} | ({before.name} if before is not None else set())
    _clean(switched, versions, keep)
    result.written += list(changed)
    result.removed = gone
    result.version = version
    return result


def _new_id() -> str:
    return f"{datetime.now(timezone.utc):%Y%m%dT%H%M%S.%fZ}-{os.getpid()}"


def _holds(path: Path, data: bytes) -> bool:
    try:
        return path.read_bytes() == data
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return False


def _relative(path: Path, out: Path, current: Path | None) -> Path | None:
    """A stale output's place in a version: by its planned name, else by where it resolves."""
    if path.is_relative_to(out):
        return path.relative_to(out)
    if current is not None:
        where = path.resolve()
        if where.is_relative_to(current.resolve()):
            return where.relative_to(current.resolve())
    return None


def _link_copy(source: Path, target: Path) -> None:
    """``target`` as a copy of the tree ``source`` in which every file is a hard link (copied where
    the file system has none); links inside the tree are copied as links.  GNU ``cp -al`` does it
    in C where it is installed (a third of a one-story rebuild at 10,000 stories was this walk)."""
    cp = shutil.which("cp") if sys.platform.startswith("linux") else None
    if cp is not None and not target.exists():
        done = subprocess.run([cp, "-al", "--", str(source), str(target)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, check=False)
        if done.returncode == 0:
            return
        shutil.rmtree(target, ignore_errors=True)
    target.mkdir()
    for folder, dirs, names in os.walk(source):
        here = Path(folder)
        there = target / here.relative_to(source)
        for name in list(dirs):
            if (here / name).is_symlink():
                dirs.remove(name)
                names.append(name)
            else:
                (there / name).mkdir()
        for name in names:
            src, dst = here / name, there / name
            if src.is_symlink():
                os.symlink(os.readlink(src), dst)
                continue
            try:
                os.link(src, dst)
            except OSError:
                shutil.copy2(src, dst)


def _copy_of(source: Path, target: Path) -> None:
    """``target`` as a hard-link copy of the live version ``source``: the spare version (the one before
    ``source``, which this run's switch would delete) renamed to ``target`` and made the same as ``source``
    where it differs, else a new ``_link_copy``.  After one story's edit the two trees differ in a few
    files, so this walks two trees instead of making 12,600 folders and deleting as many (most of an
    edit's rebuild at 10,000 stories).  A run killed halfway leaves a version that is not live, which
    the next run makes the same again (or deletes)."""
    spare = _spare_version(source, target.parent)
    if spare is not None:
        try:
            os.rename(spare, target)
            _mirror(os.fspath(source), os.fspath(target))
            return
        except OSError as exc:
            log.debug("reusing %s failed (%s); copying %s instead", spare, exc, source)
            shutil.rmtree(target, ignore_errors=True)
    _link_copy(source, target)


def _spare_version(current: Path, versions: Path) -> Path | None:
    """A version folder beside the live one that is not it: the previous version, or one a killed run left."""
    if current.parent != versions:  # a legacy output folder: not on the versions' file system for sure
        return None
    try:
        with os.scandir(versions) as entries:
            for entry in entries:
                if entry.name != current.name and not entry.name.startswith(".") \
                        and entry.is_dir(follow_symlinks=False):
                    return Path(entry.path)
    except OSError:
        return None
    return None


def _kind(entry: os.DirEntry) -> str:
    return "link" if entry.is_symlink() else "folder" if entry.is_dir(follow_symlinks=False) else "file"


def _mirror(source: str, target: str) -> None:
    """Make the tree ``target`` hold what ``source`` holds, each file a hard link to ``source``'s (the
    same inode), each link the same link; what ``source`` does not hold is removed."""
    with os.scandir(source) as entries:
        wanted = {entry.name: entry for entry in entries}
    with os.scandir(target) as entries:
        present = {entry.name: entry for entry in entries}
    for name, extra in list(present.items()):
        match = wanted.get(name)
        if match is None or _kind(match) != _kind(extra):
            if _kind(extra) == "folder":
                shutil.rmtree(extra.path)
            else:
                os.unlink(extra.path)
            del present[name]
    for name, here in wanted.items():
        there = present.get(name)
        path = os.path.join(target, name)
        kind = _kind(here)
        if kind == "folder":
            if there is None:
                os.mkdir(path)
            _mirror(here.path, path)
        elif kind == "link":
            link = os.readlink(here.path)
            if there is None or os.readlink(path) != link:
                if there is not None:
                    os.unlink(path)
                os.symlink(link, path)
        elif there is None or there.inode() != here.inode():
            if there is not None:
                os.unlink(path)
            try:
                os.link(here.path, path)
            except OSError:
                shutil.copy2(here.path, path)


def _write(path: Path | str, data: bytes) -> os.stat_result:
    """A new file in the version being built (not live yet: no temporary name needed); the hard link
    to the previous version's file is replaced, never written through.  A missing folder is made when
    the first file in it fails to open (a cold build writes 15,000 files in 10,000 folders: a ``mkdir``
    per file was a tenth of it, and remembering the folders made cost 230 bytes a file).
    Returns the file's status as written, which the run records."""
    name = os.fspath(path)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(name, flags, 0o644)
    except FileExistsError:  # the previous version's file, hard-linked: replaced, never written through
        os.unlink(name)
        fd = os.open(name, flags, 0o644)
    except FileNotFoundError:  # its folder is new in this version
        os.makedirs(os.path.dirname(name), exist_ok=True)
        fd = os.open(name, flags, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        stat = os.fstat(fd)
        if stat.st_mode & 0o7777 != 0o644:  # what the umask or a default ACL of the folder narrowed
            os.fchmod(fd, 0o644)  # (only then: a chmod per file was a tenth of a cold build's writing)
        return stat
    finally:
        os.close(fd)


def _sync_files(version: Path, written: list[Path]) -> None:
    """Everything written into ``version`` on disk before the switch names it: one ``syncfs(2)`` of its
    file system on Linux (an fsync per file cost a third of a cold build's CPU at 10,000 stories),
    else an fsync of each written file."""
    if not written:
        return
    try:
        syncfs = ctypes.CDLL(None, use_errno=True).syncfs
    except (OSError, AttributeError):
        syncfs = None
    if syncfs is not None:
        fd = os.open(version, os.O_RDONLY)
        try:
            if syncfs(fd) == 0:
                return
        finally:
            os.close(fd)
    for path in written:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _remove(version: Path, rel: Path) -> None:
    """Delete a stale file from the version being built, and the folders it leaves empty."""
    path = version / rel
    path.unlink(missing_ok=True)
    folder = path.parent
    while folder != version and folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()
        folder = folder.parent


def _switch(switched: Path, version: Path) -> Path | None:
    """Point ``switched`` at ``version`` atomically (a relative link: the project may move); return
    where a real folder that held the name before went (it is kept as the previous version)."""
    temp = switched.with_name(f".{switched.name}{_TEMP_MARK}{version.name}")
    os.symlink(os.path.relpath(version, switched.parent), temp)
    kept: Path | None = None
    if switched.is_symlink() or not switched.exists():
        os.replace(temp, switched)
    else:  # a real folder from before versions: it becomes the first kept version
        kept = version.parent / f"{_new_id()}-before"
        if _exchange(temp, switched):
            os.rename(temp, kept)  # temp now names the old folder
        else:
            log.warning("%s: moving the old output folder aside; it is missing for an instant", switched)
            os.rename(switched, kept)
            os.replace(temp, switched)
        log.info("%s is now a link to its current version in %s/ (point the web server at %s)",
                 switched, version.parent.name, switched)
    _sync_folder(switched.parent)
    return kept


def _exchange(a: Path, b: Path) -> bool:
    """Swap two names in one step (Linux renameat2 RENAME_EXCHANGE); False where that is unavailable."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(b))


def _sync_folder(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems cannot sync a folder; the rename is done all the same
    finally:
        os.close(fd)


def _clean(switched: Path, versions: Path, keep: set[str]) -> None:
    """Delete every version but the live one and the one before, and what a killed run left behind."""
    for entry in versions.iterdir():
        if entry.name in keep:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
    for entry in switched.parent.glob(f".{switched.name}{_TEMP_MARK}*"):
        if entry.is_symlink() or not entry.is_dir():
            entry.unlink(missing_ok=True)
        else:
            shutil.rmtree(entry, ignore_errors=True)
