"""Benchmarks: per-packet BPF costs, throughput and packet rate through the testbed."""
