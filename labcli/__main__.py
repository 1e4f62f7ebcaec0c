"""Run the `labcloud` CLI as `python -m labcli`."""

import sys

from labcli.cli import main

sys.exit(main())
