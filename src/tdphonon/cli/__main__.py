"""``python -m tdphonon.cli``."""

import sys

from tdphonon.cli import main

sys.exit(main())
