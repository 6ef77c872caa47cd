import sys

from bunnyrelay.lab.bench.run import main

sys.exit(main())
