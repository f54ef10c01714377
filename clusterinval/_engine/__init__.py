"""The run: rounds over the cluster's primaries, the paths that serve a pass on one node, one
retry policy, rate limits, and the topology the run keeps current."""
