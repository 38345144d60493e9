"""`python -m gatematch.cli ...` is `gatematch ...`."""

import sys

from gatematch.cli.main import main

sys.exit(main())
