"""``python -m robots.bridge serve --driver NAME --bind ADDRESS``: see `robots.bridge.server`."""

import sys

from robots.bridge.server import main

sys.exit(main())
