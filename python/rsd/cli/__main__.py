"""``python -m rsd.cli ...`` is the ``rsd`` command."""
import sys

from . import main

sys.exit(main())
