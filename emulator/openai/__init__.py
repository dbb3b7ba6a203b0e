"""OpenAI Images' dialect: generations and multipart edits."""
