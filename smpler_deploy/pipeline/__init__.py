"""From footage to meshes (`smpler-run`): frames -> people -> crops -> one batched session call -> SMPL parameters,
overlays and a parameters file.

Modules, one job each: `video` (images, folders, video files, cameras; mp4 writer), `detect` (YOLO / OpenCV /
boxes file), `crops` (the crop convention and batching), `track` (IDs across frames, temporal smoothing),
`params` (SMPL parameters and camera translation per person, .npz + JSON lines), `runner` (the threaded loop and
its per-stage throughput).

Crop convention: the one implementation in `smpler_deploy.preprocess` (`box_transform` -> `crop` -> `normalize`),
which int8 calibration, the benchmarks and `smpler-demo` also go through. A person box (x, y, w, h in image pixels, pixel-edge coordinates: x = 0, w = W spans the whole image) becomes a
square of side `BOX_MARGIN` (1.2) x max(w, h) around the box centre, resampled bilinearly to 224x224 (black
outside the image), RGB scaled to [0, 1] and normalized with the ImageNet mean/std. `CropTransform` maps crop
pixels back to image pixels; overlays and camera translations go through it. `smpler-run --save-crops DIR` writes
the 224x224 crops the model saw; `smpler-export --precision int8 --calib DIR` reads them back unchanged (a square
image is its own crop), so int8 calibrates on exactly the pipeline's inputs.
"""
