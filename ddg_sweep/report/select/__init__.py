"""DomainBed's model selection on the records table: rows of their own for variants
(`variants`), the rules and the run each cell chose (`rules`), the cells' means (`cells`)."""
