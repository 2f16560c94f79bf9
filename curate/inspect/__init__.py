"""Look inside a finished run directory: threshold help for dedup (``curate inspect --dedup``)."""
