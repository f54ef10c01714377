"""One redis-server process, attached (our child) or detached (its own session), handled by PID."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import time
from pathlib import Path

__all__ = ["RedisProcess", "log_tail", "terminate_all"]

_POLL_S = 0.02

# The detached launcher: a throw-away shell backgrounds redis-server and prints its PID, so
# the server is re-parented away from us and survives the Python process that started it.
_DETACH_SCRIPT = 'log="$1"; shift; "$@" </dev/null >>"$log" 2>&1 & echo $!'


class RedisProcess:
    """A redis-server process known by PID, with the port and directory it was started with."""

    def __init__(
        self,
        port: int,
        pid: int,
        workdir: Path,
        popen: subprocess.Popen[bytes] | None = None,
    ) -> None:
        self.port = port
        self.pid = pid
        self.workdir = workdir
        self._popen = popen

    @classmethod
    def spawn(
        cls, argv: list[str], port: int, workdir: Path, log_path: Path, *, detach: bool
    ) -> RedisProcess:
        """Start ``argv`` (a redis-server command line) with its output appended to ``log_path``."""
        if detach:
            launcher = subprocess.run(
                ["/bin/sh", "-c", _DETACH_SCRIPT, "sh", str(log_path), *argv],
                cwd=workdir,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                start_new_session=True,
                check=True,
                timeout=10,
            )
            return cls(port, int(launcher.stdout.strip()), workdir)
        with log_path.open("ab") as log:
            popen = subprocess.Popen(
                argv, cwd=workdir, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )
        return cls(port, popen.pid, workdir, popen)

    @property
    def attached(self) -> bool:
        """True when this Python process is the server's parent."""
        return self._popen is not None

    def alive(self) -> bool:
        """Return True while the process runs (a zombie counts as dead)."""
        if self._popen is not None:
            return self._popen.poll() is None
        state = _proc_state(self.pid)
        if state is None:
            return _exists(self.pid)
        return state not in ("Z", "X", "")

    def is_ours(self) -> bool:
        """Return True when the PID still belongs to the redis-server started for this port."""
        if self._popen is not None:
            return self._popen.poll() is None
        if not self.alive():
            return False
        try:
            cmdline = Path(f"/proc/{self.pid}/cmdline").read_bytes()
        except FileNotFoundError:
            return False
        except OSError:
            # No /proc (not Linux): the PID is all we have.
            return True
        text = cmdline.replace(b"\0", b" ").decode(errors="replace")
        # redis-server rewrites its title to "redis-server HOST:PORT [cluster]".
        if not re.search(rf"(?<![0-9]){self.port}(?![0-9])", text):
            return False
        with contextlib.suppress(OSError):
            return Path(os.readlink(f"/proc/{self.pid}/cwd")).resolve() == self.workdir.resolve()
        return True

    def send(self, sig: int) -> None:
        """Send ``sig`` to the process; a process already gone is not an error."""
        if self._popen is not None:
            if self._popen.poll() is None:
                self._popen.send_signal(sig)
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, sig)

    def wait_exit(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the process to end; return True if it did."""
        if self._popen is not None:
            try:
                self._popen.wait(timeout=max(timeout, 0.0))
            except subprocess.TimeoutExpired:
                return False
            return True
        deadline = time.monotonic() + timeout
        while self.alive():
            if time.monotonic() >= deadline:
                return False
            time.sleep(_POLL_S)
        return True

    def reap(self) -> None:
        """Collect the exit status of an attached process so no zombie or warning is left."""
        if self._popen is not None and self._popen.poll() is None:
            self._popen.wait()


def terminate_all(procs: list[RedisProcess], timeout: float = 10.0) -> None:
    """Stop every process: SIGCONT (a paused server ignores SIGTERM), SIGTERM, then SIGKILL."""
    live = [p for p in procs if p.alive()]
    for proc in live:
        proc.send(signal.SIGCONT)
        proc.send(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    stubborn = [p for p in live if not p.wait_exit(deadline - time.monotonic())]
    for proc in stubborn:
        proc.send(signal.SIGKILL)
    for proc in stubborn:
        proc.wait_exit(5.0)
    for proc in procs:
        if not proc.alive():
            proc.reap()


def log_tail(path: Path, lines: int = 15) -> str:
    """Return the last ``lines`` lines of a server log, or a note that there is none."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"(no log at {path})"
    return "\n".join(text.splitlines()[-lines:])


def _proc_state(pid: int) -> str | None:
    """Return the state letter from /proc/PID/stat, "" when gone, None without /proc."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return "" if Path("/proc/self").exists() else None
    except OSError:
        return None
    # The command name is in parentheses and may hold spaces: the state follows the last ")".
    rest = stat.rpartition(")")[2].split()
    return rest[0] if rest else ""


def _exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
