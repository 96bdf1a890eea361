"""A stand-in for ``java ... MultiLangDaemon``: what the launcher's supervision tests point JAVA_BIN at (through
:func:`tests.support.launcher.fake_java`). Standard library only; it ignores the java arguments it is given.

It reads its part from the environment (the launcher hands the daemon its own environment):

- ``FAKE_DAEMON_DIR``: where it writes ``daemon.pid`` once its signal handlers are in place, ``child.pid`` for the
  record processor it may start, and ``events`` (one line per thing it did: ``started``, ``SIGTERM``...).
- ``FAKE_DAEMON_RUN``: ``wait`` (default: until a signal), ``exit:N`` (exit with N at once) or ``kill:N`` (die of
  signal N at once).
- ``FAKE_DAEMON_ON_SIGTERM``: ``exit:N`` (default ``exit:0``: a drained shutdown), ``die`` (the default action:
  killed by SIGTERM) or ``ignore`` (a daemon that outlives its shutdown grace).
- ``FAKE_DAEMON_CHILD=1``: first start a record processor in the daemon's process group that ignores SIGTERM,
  as one hung in a call would be; the daemon does not wait for it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

RECORD_PROCESSOR = "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\ntime.sleep(3600)\n"


def main() -> int:
    state = Path(os.environ["FAKE_DAEMON_DIR"])

    def note(event: str) -> None:
        with (state / "events").open("a") as events:
            events.write(event + "\n")

    def on_sigterm(signum: int, _frame: object) -> None:
        note("SIGTERM")
        action = os.environ.get("FAKE_DAEMON_ON_SIGTERM", "exit:0")
        if action == "die":
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)
        elif action.startswith("exit:"):
            sys.exit(int(action.removeprefix("exit:")))

    signal.signal(signal.SIGTERM, on_sigterm)
    if os.environ.get("FAKE_DAEMON_CHILD") == "1":
        child = subprocess.Popen(
            [sys.executable, "-c", RECORD_PROCESSOR], stdin=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        (state / "child.pid").write_text(str(child.pid))
    print("fake daemon: started", file=sys.stderr, flush=True)  # relayed by the launcher as a JSON line
    note("started")
    (state / "daemon.pid").write_text(str(os.getpid()))

    run = os.environ.get("FAKE_DAEMON_RUN", "wait")
    if run.startswith("exit:"):
        return int(run.removeprefix("exit:"))
    if run.startswith("kill:"):
        signum = int(run.removeprefix("kill:"))
        if signum != signal.SIGKILL:
            signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    sys.exit(main())
