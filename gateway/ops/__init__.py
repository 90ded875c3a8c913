"""Operations on packs and the gateway: security, admin, history, firmware."""
