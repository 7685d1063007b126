"""`pokedge sync`: verified, atomic updates of models and galleries from the S3 project.

Modules, in the order a sync uses them: `config` (settings), `s3` (client),
`manifest` (the project manifest and pokedge's extension), `device` (Hailo
detection), `plan` (what to fetch), `stage` and `transfer` (reuse, resumable
downloads), `verify` (checksums), `validate` (the model loads, the gallery
fits), `versions` (the data folder layout, atomic activation, rollback,
pruning) and `runner` (one whole run). `publish` is the uploading side.
"""
