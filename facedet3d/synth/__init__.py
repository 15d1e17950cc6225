"""Stage `synth` (rule `synth`, `facedet3d synth`, config section `synth`, results/synth/)."""
