"""`python -m jaxinterp.cli`."""

import sys

from jaxinterp.cli import main

sys.exit(main())
