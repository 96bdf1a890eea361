#!/usr/bin/env python3
"""The executable the KCL MultiLangDaemon starts once per leased shard (``executableName`` in the properties).

Run ``python -m consumer run`` to start the service; the launcher renders the properties that point here.
"""

import sys

from consumer.shard import main

if __name__ == "__main__":
    sys.exit(main())
