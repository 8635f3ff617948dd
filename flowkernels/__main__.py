"""`python -m flowkernels ...`: the same command line as the `flowkernels` script."""
import sys

from .cli import main

sys.exit(main())
