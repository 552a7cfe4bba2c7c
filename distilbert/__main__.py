"""`python -m distilbert ...`: the same command line as `distilbert ...`."""

import sys

from .cli import main

sys.exit(main())
