"""``python -m cli``: the ``berth`` command."""

import sys

from cli.main import main

sys.exit(main())
