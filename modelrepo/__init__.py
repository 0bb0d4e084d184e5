"""The model-repository format shared by the optimizer and the appliance.

Both stages agree only on this: ``<repository>/<name>/<int version>/`` directories holding the
artifact files and a ``manifest.json`` that names every file with its SHA-256. Neither the
optimizer nor the server imports the other's internals; they both import this package.
"""

from modelrepo.layout import list_versions, next_version, publish_version, staging_directory
from modelrepo.manifest import (
    MANIFEST_NAME,
    MANIFEST_SCHEMA,
    Manifest,
    ManifestError,
    read_manifest,
    sha256_bytes,
    sha256_file,
    verify_files,
)

__all__ = [
    "MANIFEST_NAME",
    "MANIFEST_SCHEMA",
    "Manifest",
    "ManifestError",
    "list_versions",
    "next_version",
    "publish_version",
    "read_manifest",
    "sha256_bytes",
    "sha256_file",
    "staging_directory",
    "verify_files",
]
