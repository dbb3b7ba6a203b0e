"""The local development stack (``make run``, ``make test``): a Redis that answers, secrets, migrations, the
processes of the Procfile with the emulator. Not deployed: production is ``deploy/``."""
