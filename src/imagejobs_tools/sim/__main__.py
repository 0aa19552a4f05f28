import sys

from imagejobs_tools.sim.command import main

sys.exit(main())
