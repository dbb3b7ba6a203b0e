"""The contract both sides import: settings, errors, job states, catalog, queue names, database."""
