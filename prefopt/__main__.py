"""``python -m prefopt``: the same as the ``prefopt`` console script (needed by ``accelerate launch -m``)."""

import sys

from prefopt.cli import main

sys.exit(main())
