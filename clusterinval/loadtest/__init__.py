"""Load generator and benchmark for clusterinval (``clusterinval loadtest`` / ``clusterinval bench``).

Nothing here is part of the library's public API; the modules are used by the command line and by
the load tests.
"""
