"""The sandbox image of every node: the static ``pause`` binary packed into a one-file OCI archive.

No registry is reachable, so containerd's pinned sandbox image (:func:`pause_image_ref`) is imported
from this archive into each node before its kubelet starts.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
from pathlib import Path

from kaito_core.testing.build_node import ensure_pause_binary, pause_hash


def pause_image_ref() -> str:
    return f"localhost/kaito-pause:{pause_hash()}"



def _pause_archive(folder: Path) -> Path:
    """An OCI archive of a one-file image: the static pause binary, PATH set in its config."""
    archive = folder / f"kaito-pause-{pause_hash()}.oci.tar"
    if archive.exists():
        return archive
    binary = ensure_pause_binary().read_bytes()
    layer_buf = io.BytesIO()
    with tarfile.open(fileobj=layer_buf, mode="w", format=tarfile.PAX_FORMAT) as layer:
        info = tarfile.TarInfo("pause")
        info.size, info.mode, info.mtime = len(binary), 0o755, 0
        layer.addfile(info, io.BytesIO(binary))
    layer_tar = layer_buf.getvalue()
    layer_gz = gzip.compress(layer_tar, mtime=0)

    def digest(data: bytes) -> str:
        return "sha256:" + hashlib.sha256(data).hexdigest()

    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {
                "Entrypoint": ["/pause"],
                "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            },
            "rootfs": {"type": "layers", "diff_ids": [digest(layer_tar)]},
        },
        sort_keys=True,
    ).encode()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": digest(config), "size": len(config)},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                        "digest": digest(layer_gz), "size": len(layer_gz)}],
        },
        sort_keys=True,
    ).encode()
    index = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [{
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": digest(manifest),
                "size": len(manifest),
                "platform": {"architecture": "amd64", "os": "linux"},
                "annotations": {"io.containerd.image.name": pause_image_ref(),
                                "org.opencontainers.image.ref.name": pause_hash()},
            }],
        },
        sort_keys=True,
    ).encode()
    files = {"oci-layout": b'{"imageLayoutVersion":"1.0.0"}', "index.json": index}
    for blob in (layer_gz, config, manifest):
        files[f"blobs/sha256/{digest(blob).split(':')[1]}"] = blob
    folder.mkdir(parents=True, exist_ok=True)
    partial = archive.with_suffix(".partial")
    with tarfile.open(partial, "w") as out:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            out.addfile(info, io.BytesIO(data))
    os.replace(partial, archive)
    return archive
