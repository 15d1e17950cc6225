"""`facedet3d predict`: apply a finished run's DetP, RCAN and R to photos (and the evaluate stage's real photos)."""
