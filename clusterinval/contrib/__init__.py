"""Integrations with frameworks: ``clusterinval.contrib.django`` (a cache backend)."""
