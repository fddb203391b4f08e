"""Alembic migrations of the intake database; `dropbox.db.init_db` upgrades to head."""
