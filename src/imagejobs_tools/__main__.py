import sys

from imagejobs_tools.cli import main

sys.exit(main())
