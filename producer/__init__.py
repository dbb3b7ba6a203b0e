"""Everything that accepts work: the HTTP API, the in-process ``enqueue_job`` API and the CLI."""
