"""The mindoo command line."""
