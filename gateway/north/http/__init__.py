"""The HTTP API's routers (see gateway.http for the application and the service)."""
