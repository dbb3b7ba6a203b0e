"""A faithful local stand-in for upstream image APIs (Kling's legacy /v1 API and OpenAI Images).

Run it with ``python -m emulator``. It speaks each upstream's wire format (paths, auth, envelopes,
status values, error codes, result locations), renders real PNG images with Pillow and is steered by
scenario knobs (``/_emulator/config``) and magic prompt markers (``[fail]``, ``[429]``, …); see
``emulator/README.md``. It imports nothing from the project's own packages: it imitates someone
else's server.
"""
