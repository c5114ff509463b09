"""The engine manifest lives in `smpler_deploy.trt.manifest` (TensorRT plumbing shared by engine/ and runtime/).

Re-exported here for the build side's existing imports (builder, spec, artifacts, their tests).
"""

from ..trt.manifest import (  # noqa: F401
    FLAVOUR_TITLES, REQUIRED, SCHEMA, check_manifest, layers_path, manifest_path, read_manifest, write_manifest,
)
