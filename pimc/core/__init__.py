"""Shared foundations every stage imports: config, errors, file I/O, paths, band facts."""
