"""Pages, the JSON API and preview serving."""
