"""`python -m hystream.cli`: the same command line as `python -m hystream`."""

import sys

from . import main

sys.exit(main())
