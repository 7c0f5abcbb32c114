import sys

from benchmatch.cli import main

sys.exit(main())
