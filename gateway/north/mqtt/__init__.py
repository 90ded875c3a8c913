"""MQTT adapter: snapshot publisher with Home Assistant discovery, and the command peer."""
