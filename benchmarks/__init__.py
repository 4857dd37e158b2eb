"""Benchmarks (each a script) and what they share with the tests: benchmarks.sweepgen."""
