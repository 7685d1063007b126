"""`pokedge sync`: verified, atomic updates of models and galleries from the S3 project.

Modules, in the order a sync uses them: `config` (settings), `s3` (the
client), `manifest` (the project manifest and pokedge's extension), `device`
(Hailo detection) and `plan` (the files to fetch). Then `stage` and
`transfer` (reuse and resumable downloads), `verify` (checksums), `validate`
(the model loads and the gallery fits), `versions` (the data folder layout,
atomic activation, rollback, pruning) and `runner` (one whole run).
`publish` is the uploading side.
"""
