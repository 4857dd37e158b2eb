"""Reading sweep results, DomainBed model selection, tables and plots (no torch, no ray)."""
