"""History records downloaded from the packs and real-time recordings of their snapshots (SQLite),
with CSV/XLSX exports. See docs/history.md."""
