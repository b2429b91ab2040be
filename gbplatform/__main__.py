"""``python -m gbplatform``: the same as the ``gbplatform`` command."""

import sys

from gbplatform.app.cli import main

sys.exit(main())
