"""`python -m bnlab` is the `bnlab` command."""

import sys

from bnlab.server.cli import main

sys.exit(main())
