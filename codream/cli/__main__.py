"""`python -m codream.cli`: the `codream` command without its script on PATH."""

import sys

from codream.cli import main

sys.exit(main())
