"""Example jobs that show real use of each backend (see README, "Background work")."""
