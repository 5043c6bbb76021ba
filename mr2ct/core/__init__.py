"""Shared foundations every stage imports and that import no stage: config schemas, volumes and NIfTI I/O,
label ids, value ranges, the subject contract, the on-disk cache and run metadata."""
