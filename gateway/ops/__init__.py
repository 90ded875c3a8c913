"""Operations: everything that changes a pack or the gateway (admin, history, firmware), behind the
security package (tokens, roles, audit, errors)."""
