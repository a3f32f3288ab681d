"""Output folders: resolved once, checked before any work, written atomically.

Every command that writes a folder (``compile``, ``omap``) goes through :func:`staged_output`:
the work happens in a hidden ``.<name>.partial`` folder next to the output, which replaces the
output only when the work succeeded. On failure the staging folder (and any parent folder it
had to create) is removed; a tool log the error points at is first copied next to the output
as ``<name>-failed.log`` and the error's message is updated to name the copy.
"""

from __future__ import annotations

import errno
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from celosia.errors import CelosiaError, OutputExistsError, OutputPathError

__all__ = ["resolve_path", "check_output", "staged_output", "failed_log_path"]


def resolve_path(path: str | os.PathLike) -> Path:
    """An absolute, normalised path: ``~`` expanded, relative to the current directory.

    Symlinks are kept (``..`` is folded textually, as the shell shows paths). Resolve once,
    at the entry point: everything below (tools run in other working directories) then sees
    the same absolute path.
    """
    return Path(os.path.abspath(os.path.expanduser(os.fspath(path))))


def failed_log_path(out: Path) -> Path:
    """Where the log of a failed build of ``out`` is kept: ``<out>-failed.log`` next to it."""
    return out.parent / f"{out.name}-failed.log"


def _nearest_existing(path: Path) -> Path:
    while not os.path.lexists(path) and path != path.parent:
        path = path.parent
    return path


def check_output(out: str | os.PathLike, *, force: bool = False) -> Path:
    """Check, before any work, that ``out`` can be (re)created as a folder; return it resolved.

    Raises
    ------
    OutputExistsError
        If ``out`` exists and ``force`` is false, or ``out`` is a file (``force`` replaces
        folders only, never a file).
    OutputPathError
        If a parent of ``out`` is a file or the nearest existing parent is not writable.
    """
    out = resolve_path(out)
    if os.path.lexists(out):
        if not out.is_dir():
            raise OutputExistsError(
                f"output path '{out}' is a file, not a folder",
                hint="choose another output folder (-o DIR); --force replaces an existing folder, never a file")
        if not force:
            raise OutputExistsError(f"output folder '{out}' already exists",
                                    hint="pass --force to replace it, or choose another folder")
    parent = _nearest_existing(out.parent)
    if not parent.is_dir():
        raise OutputPathError(
            f"cannot create output folder '{out}': '{parent}' is a file, not a folder",
            hint="choose an output folder whose parents are folders (-o DIR)")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputPathError(
            f"cannot create output folder '{out}': no permission to write in '{parent}'",
            hint="choose a folder you can write to (-o DIR), or fix the permissions of the parent folder")
    return out


def _mkdirs(path: Path) -> list[Path]:
    """Create ``path`` and its missing parents; return the folders created, outermost first."""
    missing = []
    p = path
    while not os.path.lexists(p):
        missing.append(p)
        p = p.parent
    missing.reverse()
    made = []
    try:
        for p in missing:
            p.mkdir()
            made.append(p)
    except OSError:
        _remove_empty(made)
        raise
    return made


def _remove_empty(folders: list[Path]) -> None:
    for p in reversed(folders):
        try:
            p.rmdir()
        except OSError:
            pass  # not empty (a kept log, a concurrent writer) or already gone


def _keep_log(exc: CelosiaError, staging: Path, out: Path) -> None:
    """Copy the log ``exc`` points at out of ``staging`` (about to be deleted)."""
    log = exc.log
    if log is None or not log.is_file():
        return
    try:
        log.resolve().relative_to(staging.resolve())
    except ValueError:
        return  # outside the staging folder: it survives as it is
    dest = failed_log_path(out)
    try:
        shutil.copyfile(log, dest)
    except OSError:
        tail = log.read_text(errors="replace").splitlines()[-20:]
        exc.message += "\n  log (deleted with the staging folder), last lines:\n" + "\n".join(
            "    " + line for line in tail)
        exc.args = (exc.message,)
        exc.log = None
        return
    exc.moved_log(dest)


def _os_error(out: Path, exc: OSError) -> OutputPathError:
    what = exc.strerror or str(exc)
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        hint = "choose a folder you can write to (-o DIR), or fix the permissions of the parent folder"
    elif exc.errno == errno.ENOSPC:
        hint = "free some disk space or choose another output folder"
    else:
        hint = "choose another output folder (-o DIR)"
    where = f" ({exc.filename})" if exc.filename else ""
    return OutputPathError(f"cannot write output folder '{out}': {what}{where}", hint=hint)


@contextmanager
def staged_output(out: str | os.PathLike) -> Iterator[Path]:
    """Work in a hidden ``.<name>.partial`` folder next to ``out``; publish it as ``out`` on success.

    The caller decides about an existing ``out`` (refuse unless forced) before entering; an
    existing ``out`` folder is replaced only once the block succeeded. On any error the staging
    folder and the parent folders it created are removed, so nothing half-written remains; a
    :class:`CelosiaError` whose ``log`` lies in the staging folder has the log copied to
    :func:`failed_log_path` first, and its message names the copy.

    Parameters
    ----------
    out : path-like
        The output folder (``~`` and relative paths allowed).

    Yields
    ------
    Path
        The (absolute) staging folder to write into.

    Raises
    ------
    OutputExistsError
        If ``out`` is a file.
    OutputPathError
        If the folder cannot be created or published (permissions, a file in the way, no space).
    """
    out = check_output(out, force=True)
    staging = out.parent / f".{out.name}.partial"
    try:
        if staging.is_symlink() or staging.is_file():
            staging.unlink()
        elif staging.exists():
            shutil.rmtree(staging)  # left over by an interrupted run
        made = _mkdirs(staging)
    except OSError as exc:
        raise _os_error(out, exc) from None
    parents = made[:-1]
    try:
        yield staging
        _publish(staging, out)
    except BaseException as exc:
        if isinstance(exc, CelosiaError):
            _keep_log(exc, staging, out)
        shutil.rmtree(staging, ignore_errors=True)
        _remove_empty(parents)
        if isinstance(exc, OSError) and _inside(exc.filename, out, staging):
            raise _os_error(out, exc) from None
        raise


def _inside(filename, *folders: Path) -> bool:
    """Whether an OSError's file lies in one of ``folders`` (then it is about the output)."""
    if not filename:
        return False
    path = resolve_path(filename)
    return any(path == f or f in path.parents for f in folders)


def _publish(staging: Path, out: Path) -> None:
    """Rename ``staging`` to ``out``; an existing ``out`` folder is moved away first, then removed."""
    old = None
    if os.path.lexists(out):
        if not out.is_dir():
            raise OutputExistsError(
                f"output path '{out}' is not a folder (it appeared while compiling)",
                hint="choose another output folder (-o DIR)")
        old = out.parent / f".{out.name}.old"
        if old.is_symlink() or old.is_file():
            old.unlink()
        elif old.exists():
            shutil.rmtree(old)
        out.rename(old)
    try:
        staging.rename(out)
    except OSError:
        if old is not None:
            old.rename(out)
        raise
    if old is not None:
        if old.is_symlink():
            old.unlink()
        else:
            shutil.rmtree(old, ignore_errors=True)
