"""Benchmarks (`make bench`): timings go to JSON under bench/results/ with a PNG plot, never into tests."""
