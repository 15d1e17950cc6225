"""Extraction ("FDS extraction", paper Eq. 1): face detection, model fitting, texture and detail maps."""
