"""Datasets: the DomainBed catalogue, DemoDigits, splits, transforms, loaders."""
