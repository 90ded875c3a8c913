"""Application: validated configuration, the shared context, wiring of every service, the supervisor
and systemd notification. The only layer that knows every other one."""
