"""Generators of the reference docs that are data (`docs/parameters.md`, `docs/flags.md`): pure text
renderers over `mappings/` and the codecs' tables, each kept equal to its committed file by a test.

Documentation tooling only: nothing in the gateway imports it, and it never touches a bus or a file
other than the packaged data it renders.
"""
