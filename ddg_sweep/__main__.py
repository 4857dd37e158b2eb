import sys

from ddg_sweep.run import main

sys.exit(main())
