"""`python -m twin`: the same command line as the `twin` script."""

import sys

from twin.cli import main

sys.exit(main())
