"""Reserved for later work (see DESIGN.md)."""
