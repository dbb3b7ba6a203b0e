"""ByteDance Ark's (Seedream) images dialect."""
