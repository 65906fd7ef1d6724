"""Benchmarks that drive a real `meansql serve` over the wire (see bench/README.md)."""
