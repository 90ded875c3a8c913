"""Per-family drivers: which requests to send for each kind of read/write, and how to turn the
codec's typed results into model objects. The bus owner does the I/O; drivers only await it."""
