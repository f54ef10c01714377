"""Load generator and benchmark (``clusterinval loadtest`` and ``clusterinval bench``).

Nothing here is part of the library's public API; the modules are used by the command line and by
the load tests.
"""
