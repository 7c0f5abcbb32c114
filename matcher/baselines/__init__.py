"""What the MILP is measured against: brute-force enumeration (the reference the tests compare
its answers with) and a greedy baseline (the perf script shows what the MILP buys over it).
Neither is on the path of a recommendation."""
