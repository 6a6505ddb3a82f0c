"""Technology behind the ports, and the command line in front of the core."""
