"""The Ray cluster: local heterogeneous cluster, hardware probe and catalog."""
