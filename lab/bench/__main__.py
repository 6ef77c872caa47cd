import sys

from lab.bench.run import main

sys.exit(main())
