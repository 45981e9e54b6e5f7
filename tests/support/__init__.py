"""Shared test support: Go fixture builds and other helpers used across test packages."""
