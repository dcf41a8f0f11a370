"""Use tcmalloc for the long-running commands when the machine has it.

Why: glibc malloc returns the large activation buffers of every training step to the kernel and maps them again on
the next one (hundreds of thousands of page faults per ResNet-18 step on the 2-core CPU this project was built on);
tcmalloc keeps them. Measured here with ``benchmarks/train_throughput.py``: 1.06–1.14× the training throughput of
glibc malloc on the same machine (BENCHMARKS.md §2). The allocator can only be swapped when a process starts, so
``pneumoscan train|pretrain|tune|loso`` re-executes itself once with ``LD_PRELOAD`` set, before any work is done.
Nothing changes when the library is absent (``apt-get install libtcmalloc-minimal4`` adds it) or when
``PNEUMOSCAN_TCMALLOC=0``. torch is not imported here: the decision is made before it loads.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

logger = logging.getLogger(__name__)

ENV_SWITCH = "PNEUMOSCAN_TCMALLOC"
_ENV_DONE = "PNEUMOSCAN_ALLOCATOR_REEXEC"
_CANDIDATES = ("libtcmalloc_minimal.so.4", "libtcmalloc.so.4")
_LIB_DIRS = ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib", "/usr/local/lib")


def find_tcmalloc(dirs: Sequence[str] = _LIB_DIRS) -> Path | None:
    """The first tcmalloc shared library found in the usual system folders, or None."""
    for folder in dirs:
        for name in _CANDIDATES:
            path = Path(folder) / name
            if path.is_file():
                return path
    return None


def reexec_with_tcmalloc(argv: Sequence[str]) -> None:
    """Replace this process by the same command with tcmalloc preloaded, when that is possible and wanted.

    Returns without doing anything when: not Linux, switched off, already done (or already preloaded), running under
    torchrun (the launcher owns the environment) or no tcmalloc library is installed.
    """
    env = os.environ
    if (not sys.platform.startswith("linux") or env.get(ENV_SWITCH, "1") == "0" or env.get(_ENV_DONE)
            or "tcmalloc" in env.get("LD_PRELOAD", "") or "LOCAL_RANK" in env):
        return
    lib = find_tcmalloc()
    if lib is None:
        return
    new_env = dict(env)
    new_env["LD_PRELOAD"] = f"{lib}:{env['LD_PRELOAD']}" if env.get("LD_PRELOAD") else str(lib)
    new_env[_ENV_DONE] = "1"
    try:
        os.execve(sys.executable, [sys.executable, "-m", "pneumoscan.cli.main", *argv], new_env)
    except OSError as err:  # e.g. the interpreter cannot be executed again: carry on with glibc malloc
        logger.warning("could not restart with tcmalloc (%s); continuing with the system allocator", err)
