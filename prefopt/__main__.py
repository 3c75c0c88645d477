"""``python -m prefopt``: the same as the ``prefopt`` console script (needed by ``accelerate launch -m``)."""

import sys

from prefopt.cli import main

if __name__ == "__main__":
    sys.exit(main())
