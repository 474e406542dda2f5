"""Local, real infrastructure for development, tests and the demo (never production)."""
