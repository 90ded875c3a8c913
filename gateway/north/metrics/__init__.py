"""Prometheus adapter: a custom collector rendering the latest snapshots at scrape time."""
