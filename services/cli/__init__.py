"""The `mdmpush` command line."""
