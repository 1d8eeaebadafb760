"""The lab: what a researcher or a teacher uses around the proxy, not what an operator needs
to run it. Namespaces and the testbed (``netns``, ``testbed``), traffic (``traffic``,
``frames``), the proxy as a subprocess (``proxyproc``), ``demo`` and ``bench``.

The product (config, loader, backends, runner, CLI) never imports from here; the CLI only
registers the lab's commands (``testbed``, ``demo``, ``bench``).
"""
