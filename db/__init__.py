"""Storage: the only package that speaks SQL (SQLAlchemy Core tables, engines, migrations, stores)."""
