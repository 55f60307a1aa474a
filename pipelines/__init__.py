"""Batch jobs over many clips (Ray Data) and the `avatar` command line."""
