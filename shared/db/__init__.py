"""SQLModel tables, the engine, keyword-only repository functions, and Alembic migrations."""
