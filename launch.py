#!/usr/bin/env python3
"""Start vlmchat: `python launch.py` serves the web UI; `python launch.py --help` lists the commands.

On first use it installs what it needs into .venv/ (see vlmchat/bootstrap.py).
"""

import sys

from vlmchat.cli import main

if __name__ == "__main__":
    sys.exit(main())
