#!/usr/bin/env bash
# GPU check of the rasterizer (issue 16 §1). Run from anywhere on a CUDA machine whose
# python3 has torch (no install needed): `bash scripts/gpu_check.sh [--quick]`.
# Prints JSON lines:
#   1. the rows of `facedet3d bench rasterize --device cuda` (batch 1/8/64 x 256/512/1024²;
#      --quick: 256², batch 1/64), made by the same function the CLI calls. The CLI itself
#      is skipped because it imports the config schema (jsonschema), which a bare GPU image
#      may lack; with the package's dependencies installed,
#      `PYTHONPATH=. python3 -m facedet3d.cli bench rasterize --device cuda` prints the same rows;
#   2. CPU vs CUDA: triangle ids, barycentrics, depth, mask and z-buffer keys of the face
#      template (~41k triangles) at 256² and 512², batch 1 and 8, and of a random triangle
#      soup cut into several passes; every one must be bit-equal.
# Exit status 1 when anything differs.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 OPENBLAS_NUM_THREADS=1
exec "${PYTHON:-python3}" - "$@" <<'PY'
import argparse, json, math, sys

import torch

from facedet3d import bench
import facedet3d.render.rasterize as rast
from facedet3d.face.template import build_template
from facedet3d.render.camera import face_camera, place_face

quick = "--quick" in sys.argv[1:]
assert torch.cuda.is_available(), "no CUDA device"
print(json.dumps({"check": "env", "torch": torch.__version__, "gpu": torch.cuda.get_device_name(0)}))

args = argparse.Namespace(device="cuda", threads=1, quick=quick, workers=2, models="results", config=None)
for row in bench.run("rasterize", args):
    print(json.dumps(row))

ok = True


def compare(name, screen, faces, size, perspective, **extra):
    global ok
    cpu = rast.rasterize(screen, faces, (size, size), perspective_correct=perspective)
    gpu = [t.cpu() for t in rast.rasterize(screen.cuda(), faces.cuda(), (size, size), perspective_correct=perspective)]
    keys_cpu = rast._visibility(screen, faces, (size, size), perspective, False, None)
    keys_gpu = rast._visibility(screen.cuda(), faces.cuda(), (size, size), perspective, False, None).cpu()
    row = {"check": "cpu_vs_cuda", "case": name, "image_size": size, "batch": screen.shape[0], **extra,
           "tri_id_mismatches": int((cpu.tri_id != gpu[0]).sum()),
           "bary_max_abs_diff": float((cpu.bary - gpu[1]).abs().max()),
           "bary_equal": torch.equal(cpu.bary, gpu[1]), "depth_equal": torch.equal(cpu.depth, gpu[2]),
           "mask_equal": torch.equal(cpu.mask, gpu[3]), "keys_equal": torch.equal(keys_cpu, keys_gpu),
           "covered": float(cpu.mask.float().mean())}
    row["equal"] = (row["tri_id_mismatches"] == 0 and row["bary_equal"] and row["depth_equal"]
                    and row["mask_equal"] and row["keys_equal"])
    ok &= row["equal"]
    print(json.dumps(row))


t = build_template(192)
verts, faces = torch.as_tensor(t.vertices).float(), torch.as_tensor(t.faces).long()
for size in (256, 512):
    for batch in (1, 8):
        cam = face_camera((size, size), "perspective")
        yaw = torch.linspace(-0.3, 0.3, batch) if batch > 1 else torch.zeros(1)
        screen = cam.project(place_face(verts, torch.stack([yaw, 0.1 * yaw, torch.zeros(batch)], -1)))
        compare("face", screen, faces, size, True)
cam = face_camera((256, 256), "orthographic")
compare("face_orthographic", cam.project(place_face(verts, torch.tensor([[0.2, 0.0, 0.0]] * 4))), faces, 256, False)

# Random triangles of 1-300 px, partly off-screen, in several passes on the GPU.
gen = torch.Generator().manual_seed(0)
b, n, size = 4, 3000, 192
centre = torch.rand(b, n, 1, 2, generator=gen) * 1.4 * size - 0.2 * size
side = torch.exp(torch.rand(b, n, 1, 1, generator=gen) * math.log(300.0))
xy = centre + (torch.rand(b, n, 3, 2, generator=gen) - 0.5) * side
soup = torch.cat([xy, 10 + 5 * torch.rand(b, n, 3, 1, generator=gen)], -1).reshape(b, 3 * n, 3)
soup_faces = torch.arange(3 * n).reshape(n, 3)
full = rast._GPU_LIMITS
rast._GPU_LIMITS = full._replace(candidates=1 << 16)
compare("soup", soup, soup_faces, size, True, gpu_candidates_per_pass=1 << 16)
rast._GPU_LIMITS = full
compare("soup", soup, soup_faces, size, True, gpu_candidates_per_pass=full.candidates)

print(json.dumps({"check": "summary", "all_equal": bool(ok)}))
sys.exit(0 if ok else 1)
PY
