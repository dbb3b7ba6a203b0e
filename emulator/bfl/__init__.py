"""Black Forest Labs' dialect: submit, polling_url, webhooks."""
