"""Files that appear whole or not at all: every file and folder the project writes is made under a
temporary name beside its place, synced, and renamed onto it. A crash, a Ctrl-C or an error while
writing leaves whatever was there before untouched, and no half-written file."""

import os
import shutil
from contextlib import contextmanager

PARTIAL = ".partial"  # in the name of every file or folder still being written


@contextmanager
def written(path, suffix=""):
    """Yields the temporary path to write (a hidden name beside `path`, ending in `suffix`, which
    writers that read the format from the name need). On a clean exit it is synced and renamed onto
    `path`; on any exception it is removed and the exception goes on."""
    folder, name = os.path.split(os.path.abspath(path))
    partial = os.path.join(folder, f".{name}.{os.getpid()}{PARTIAL}{suffix}")
    try:
        yield partial
        if os.path.isfile(partial):
            with open(partial, "rb+") as f:
                os.fsync(f.fileno())
        os.replace(partial, path)
    finally:
        if os.path.isdir(partial):
            shutil.rmtree(partial)
        elif os.path.exists(partial):
            os.remove(partial)
