"""Everything that executes work: the Celery app, thin tasks, the pipeline, providers, webhooks."""
