"""``python -m rlhf.cli``: the ``rlhf`` command (what Ray jobs run on a cluster)."""

import sys

from rlhf.cli import main

sys.exit(main())
