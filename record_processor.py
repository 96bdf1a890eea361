#!/usr/bin/env python3
"""The executable the KCL MultiLangDaemon starts once per leased shard (``executableName`` in the properties).

Run ``python -m consumer run`` to start the service; the launcher renders the properties that point here. With
the launcher's fork server running, this process only hands its stdin/stdout/stderr to a worker forked from it
and ends as that worker ends (consumer/runtime/forkclient.py); otherwise it runs the shard itself.
"""

import sys

from consumer.runtime.forkclient import run as run_in_fork_server

if __name__ == "__main__":
    status = run_in_fork_server()
    if status is None:
        from consumer.runtime.shard import main

        status = main()
    sys.exit(status)
