"""Stage `ingest` (rule `ingest`, `facedet3d ingest`, config section `ingest`, results/ingest/)."""
