"""Tests of the upstream emulator (``emulator/``), run in-process through FastAPI's TestClient."""
