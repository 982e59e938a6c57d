"""Side-by-side benchmarks of remotelock and its peers (``./dev.sh bench``)."""
