"""Everything that faces GitHub: webhook intake, event routing, the API client, reporting."""
