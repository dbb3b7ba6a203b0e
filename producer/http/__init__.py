"""The FastAPI front door: one router per API dialect, auth, the sync waiter, signed file downloads."""
