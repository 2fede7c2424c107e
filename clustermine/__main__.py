import sys

from clustermine.cli import main

sys.exit(main())
