"""The authenticated admin channel: tokens and roles, the audit log, and the admin operations that
the HTTP API, the CLI and MQTT commands share."""
