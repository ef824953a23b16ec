import sys

from telepresence.cli import main

sys.exit(main())
