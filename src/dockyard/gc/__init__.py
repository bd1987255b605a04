"""Long-running lifecycle work: garbage collection, its schedule, deletes by pattern."""
