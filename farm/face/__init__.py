"""The face stack: identity packs, detection, tracking, classic swap, masks and blending.

Modules (import them directly; this package stays light because `farm.spec` imports its settings):

- `farm.face.settings`   `FaceSettings`, the face part of a `JobSpec`
- `farm.face.identity`   `create_identity` / `load_identity` → `IdentityPack` (faces, voice refs,
                         consent path and sha256)
- `farm.face.dlib_stack` `DlibFaceStack`: HOG detector, 68 landmarks, 128-D descriptors (dlib)
- `farm.face.tracking`   `FaceTracker` (IoU + descriptor association, gap filling, One-Euro)
- `farm.face.swap`       `ClassicSwapper`: piecewise-affine warp, LAB colour match, masks, blending
- `farm.face.processor`  `build_face_swap_processor(spec)` → the ``classic-swap`` `FrameProcessor`
- `farm.face.geometry`   boxes, alignment, triangulation, warp maps (pure functions)
"""
