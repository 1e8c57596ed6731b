"""Every renderer: text (rich), json (one schema), markdown, tables, progress. Nothing is imported here."""
