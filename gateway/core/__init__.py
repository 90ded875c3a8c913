"""Core: the pack model (the one bank view), the charge policy and the controls. The single source of
truth every north adapter reads; never imports north/, ops/ or cli/."""
