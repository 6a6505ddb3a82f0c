"""The command line: click commands and what they print."""
