"""Pure-torch rendering: cameras, rasterizer, SH shading, displacement along normals, OBJ export."""
