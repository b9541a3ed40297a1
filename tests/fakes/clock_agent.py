"""A `command` agent that logs its life on the real clock: start, then end (done or orphaned).

Run as ``env -u LD_PRELOAD -u FAKETIME python clock_agent.py LOG SECONDS`` so that a serve
process under libfaketime still starts an agent that sees the true time. An agent whose
serve process died (kill -9) ends at once, as a well-behaved agent tied to its
dispatcher does, and says so (serve may also take it along with SIGKILL: PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time


def log(path: str, event: str) -> None:
    line = json.dumps(
        {
            "event": event,
            "task": int(os.environ["LANEWARDEN_TASK_ID"]),
            "run": int(os.environ["LANEWARDEN_RUN_ID"]),
            "pid": os.getpid(),
            "at": time.time(),
        }
    )
    with open(path, "a") as f:
        f.write(line + "\n")


def main() -> int:
    path, seconds = sys.argv[1], float(sys.argv[2])
    parent = os.getppid()

    def stopped(_signo: int, _frame: object) -> None:
        log(path, "stopped")
        sys.exit(143)

    signal.signal(signal.SIGTERM, stopped)
    log(path, "start")
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if os.getppid() != parent:
            log(path, "orphaned")
            return 1
        time.sleep(0.02)
    log(path, "end")
    print(f"done {os.environ['LANEWARDEN_TASK_ID']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
