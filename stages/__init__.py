"""Thin Typer commands, one per DVC stage; the work lives in `pipeline`."""
