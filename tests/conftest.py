"""Shared test setup: the real-control-plane fixtures of kaito_core.testing."""

pytest_plugins = ["kaito_core.testing.pytest_plugin"]
