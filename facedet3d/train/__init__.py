"""The one training loop shared by DetP, RCAN and the renderer: device, seeding, phases,
maintenance (status line, loss log, checkpoint), atomic checkpoints and resume."""
