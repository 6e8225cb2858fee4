"""``python -m metering.cli``: the same as the installed ``metering`` command."""

import sys

from metering.cli import main

sys.exit(main())
