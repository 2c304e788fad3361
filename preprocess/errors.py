"""How the command lines (preprocess/cli.py, pipelines/core/cli.py) turn what a user or the
machine got wrong into one line, `error: ...`, and exit status 2, instead of a traceback."""

from __future__ import annotations

import errno
import sys

from absl import flags


def describe(error: BaseException) -> str:
    """The message for a user error; for an OSError the path and what to do about it."""
    if not isinstance(error, OSError) or isinstance(error, FileNotFoundError) and not error.filename:
        return str(error)
    where = f"{error.filename}: " if error.filename else ""
    what = error.strerror or str(error)
    hint = {
        errno.ENOSPC: "free some space and rerun the same command (completed work is kept)",
        errno.EDQUOT: "free some space and rerun the same command (completed work is kept)",
        errno.EACCES: "choose a folder you can write to",
        errno.EPERM: "choose a folder you can write to",
        errno.EROFS: "choose a folder on a writable file system",
        errno.ENOTDIR: "a part of that path is a file, not a folder",
        errno.EEXIST: "a file of that name is in the way",
    }.get(error.errno)
    return f"{where}{what}" + (f" ({hint})" if hint else "")


def parse_flags_or_exit(argv: list[str], flag_values: flags.FlagValues = flags.FLAGS,
                        origins: dict[str, str] | None = None) -> list[str]:
    """absl's flag parsing with a bad or unknown flag reported as `error: ...`, exit status 2 (absl
    itself prints "FATAL Flags parsing error" and exits 1). `origins` maps an argument to the
    flagfile it came from, so the message can name that file."""
    try:
        return flag_values(argv)
    except flags.Error as error:
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        name = getattr(error, "flagname", None)
        source = next((path for arg, path in (origins or {}).items()
                       if name and arg.lstrip("-").split("=", 1)[0] in (name, "no" + name)), None)
        print(f"error: {message}" + (f" (in the flagfile {source})" if source else ""), file=sys.stderr)
        sys.exit(2)
