"""The API's durable records: SQLAlchemy models, Alembic migrations, `RecordStore`."""
