import sys

from afxdp_proxy.entry import main

sys.exit(main())
