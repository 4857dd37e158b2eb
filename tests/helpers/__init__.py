"""Helpers the test modules share (tests/conftest.py holds the fixtures every test sees)."""
