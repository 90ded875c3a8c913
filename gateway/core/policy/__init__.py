"""The charge policy: the pure engine, the decisions store and the service that re-evaluates it."""
