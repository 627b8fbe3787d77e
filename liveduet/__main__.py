import sys

from liveduet.cli import main

sys.exit(main())
