"""Google Gemini's generateContent dialect."""
