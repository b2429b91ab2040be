"""``python -m gbplatform``: the same as the ``gbplatform`` command."""

import sys

from gbplatform.cli import main

sys.exit(main())
