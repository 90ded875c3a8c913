"""Security shared by every operation: bearer tokens and roles, the append-only audit log, the error
hierarchy with HTTP statuses, and the SQLite WAL file base."""
