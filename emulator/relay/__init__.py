"""An OpenAI-compatible relay's dialect."""
