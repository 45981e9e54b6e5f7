"""Smoke tests proving the Go fixtures (plugins and host) work with each other."""
