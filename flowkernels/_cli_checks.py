"""What every `flowkernels` sub-command shares: an argument parser whose errors are one line, checks of input files,
output paths and devices that name the problem, and the runner that turns any failure into one line and exit 2.

A leaf module: cli.py, demo.py and bench/ import it; it imports none of them (the device check lives in
_validation, which the drop-ins may use too).
"""
from __future__ import annotations

import argparse
import os
import sys

from ._validation import check_device

EXIT_USAGE = 2


class _Formatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows "(default: X)" after an option's help unless there is no default or the help already states it."""

    def _get_help_string(self, action):
        text = action.help or ""
        if action.default is None or action.default is False or action.default == argparse.SUPPRESS or "default" in text:
            return text
        return super()._get_help_string(action)


class Parser(argparse.ArgumentParser):
    """argparse with defaults shown in every option's help and errors as one line (no usage block)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", _Formatter)
        super().__init__(*args, **kwargs)

    def error(self, message):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def one_line(text: str) -> str:
    return " ".join(str(text).split())


def run(fn, args, prog: str) -> int:
    """fn(args), with every failure reported as one line on stderr and SystemExit(2), as argparse does for usage
    errors (FLOWKERNELS_DEBUG=1 re-raises instead, for the traceback)."""
    try:
        return fn(args)
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # a command line reports, it does not dump a traceback on a newcomer
        if os.environ.get("FLOWKERNELS_DEBUG", "") not in ("", "0"):
            raise
        expected = isinstance(exc, (ValueError, TypeError, OSError, RuntimeError, ImportError))
        message = str(exc) if expected and str(exc) else f"{type(exc).__name__}: {exc}"
        sys.stderr.write(f"{prog}: error: {one_line(message)}\n")
        raise SystemExit(EXIT_USAGE) from None


def input_file(option: str, path: str, suffixes=None) -> str:
    """A readable regular file, with one of `suffixes` when given."""
    if not os.path.exists(path):
        raise ValueError(f"{option} {path!r}: no such file")
    if os.path.isdir(path):
        raise ValueError(f"{option} {path!r} is a directory; give a file")
    if not os.access(path, os.R_OK):
        raise ValueError(f"{option} {path!r} is not readable (permissions)")
    if suffixes and not path.lower().endswith(tuple(suffixes)):
        raise ValueError(f"{option} {path!r}: expected a {' / '.join(suffixes)} file")
    return path


def output_file(option: str, path: str, suffixes=None) -> str:
    """A path whose folder exists and is writable, with one of `suffixes` when given."""
    if suffixes and not path.lower().endswith(tuple(suffixes)):
        raise ValueError(f"{option} {path!r}: the extension must be one of {' '.join(suffixes)}")
    if os.path.isdir(path):
        raise ValueError(f"{option} {path!r} is a directory; give a file name")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise ValueError(f"{option} {path!r}: the folder {folder!r} does not exist")
    if not os.access(folder, os.W_OK):
        raise ValueError(f"{option} {path!r}: the folder {folder!r} is not writable")
    return path


def output_dir(option: str, path: str) -> str:
    """A folder to write into: an existing writable folder, or a new one inside an existing writable folder."""
    path = os.path.abspath(path)
    if os.path.exists(path):
        if not os.path.isdir(path):
            raise ValueError(f"{option} {path!r} is a file, not a folder")
        if not os.access(path, os.W_OK):
            raise ValueError(f"{option} {path!r} is not writable")
        return path
    parent = os.path.dirname(path)
    if not os.path.isdir(parent):
        raise ValueError(f"{option} {path!r}: the folder {parent!r} does not exist")
    if not os.access(parent, os.W_OK):
        raise ValueError(f"{option} {path!r}: cannot create it, {parent!r} is not writable")
    return path


def device(option: str, name):
    """A torch.device that exists here: unknown names and CUDA without a visible GPU are named errors."""
    return check_device(option, name)
