import sys

from afxdp_proxy.cli import main

sys.exit(main())
