"""Worker processes that die with the process that started them (preprocess, predict).

The pool's workers are forked by a forkserver, itself a child of the command's process. multiprocessing's own
"alive" pipe does not end the forkserver while workers live (each worker holds a copy of its write end), and a
worker blocked on the pool's queue never notices the command is gone. So, even for a command killed by
``kill -9`` that runs no clean-up:

- the forkserver asks the kernel for SIGKILL when the command dies (``prctl(PR_SET_PDEATHSIG)``, Linux; set when
  it imports this module as a preload; the command starts it from its main thread, whose end is what counts);
- every process the forkserver forks asks for SIGKILL when the forkserver dies (a fork hook the forkserver
  installs, so from the child's first instruction; again in the workers' initializer), so the kill runs down
  the tree; the resource tracker then sees its pipe close and exits;
- a worker about to commit to a cache checks that the cache's lock is still held by the command
  (``cache.VideoWriter``), so nothing is written after its owner is gone, whatever the platform.

Ctrl-C goes to the whole process group: workers ignore SIGINT (from their first instruction, inherited from the
forkserver) and the command, which alone handles it, kills them. So an interrupt prints one line and no
worker traceback, at any moment (start-up included).
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int = signal.SIGKILL) -> bool:
    """Ask the kernel to send ``sig`` to this process when its parent dies (Linux); True when set. A parent that
    died before the request (this process already re-parented) makes this process exit at once."""
    if not sys.platform.startswith("linux"):
        return False
    parent = os.getppid()
    try:  # the C library already loaded in this process (find_library would spawn ldconfig or a compiler)
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
            return False
    except (OSError, AttributeError):
        return False
    if os.getppid() != parent:  # the parent died meanwhile: nobody will signal us
        os._exit(1)
    return True


def ignore_interrupts() -> None:
    """Ctrl-C is the command's to handle: a worker ignores SIGINT (the command kills it)."""
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    except ValueError:  # not the main thread
        pass


_forked = False  # set in the forkserver's children, so that a fork of theirs does not run the hook again


def _after_fork_in_forkserver_child(forkserver: int) -> None:
    global _forked
    if _forked:
        return
    _forked = True
    if os.getppid() != forkserver:  # the forkserver died between the fork and here
        os._exit(1)
    die_with_parent()


def _in_forkserver() -> bool:
    """Whether this module is being imported by multiprocessing's forkserver (as one of its preload modules)."""
    frame = sys._getframe(1)
    while frame is not None:
        code = frame.f_code
        if code.co_name == "main" and code.co_filename.replace("\\", "/").endswith("multiprocessing/forkserver.py"):
            return True
        frame = frame.f_back
    return False


def _set_up_forkserver() -> None:
    """In the forkserver: SIGINT ignored (its children start with that disposition: the forkserver restores the
    one it had before its own handlers), it dies with the command and every child it forks dies with it; its
    stderr (which its children inherit) goes to /dev/null unless AUBENCH_DEBUG=1: a child that starts while the
    command is interrupting finds the pool's semaphores gone and multiprocessing would print that traceback
    beside the command's one line (workers' own chatter, mediapipe's, is silenced the same way)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    die_with_parent()
    if os.environ.get("AUBENCH_DEBUG", "") in ("", "0"):
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, 2)
        os.close(null)
    server = os.getpid()
    os.register_at_fork(after_in_child=lambda: _after_fork_in_forkserver_child(server))


if _in_forkserver():  # pragma: no cover - runs in the forkserver process
    _set_up_forkserver()
