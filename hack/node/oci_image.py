#!/usr/bin/env python3
"""Writes a one-layer image as a docker-archive tarball (manifest.json + config JSON + layer tar),
which `ctr -n k8s.io images import` accepts: the test node (hack/node.sh) has no registry to pull
from, so it builds its few images from local files. The output is reproducible (fixed mtimes,
sorted entries), so importing it again yields the same image id.

usage: oci_image.py --tag NAME:TAG --out FILE [--entrypoint ARG]... [--cmd ARG]... [--user U]
                    [--workdir DIR] [--env K=V]... [--file SRC:DEST[:MODE]]...
                    [--symlink DEST:TARGET]... [--dir DEST[:MODE]]...
"""
import argparse
import hashlib
import io
import json
import os
import tarfile


def add_parents(tar, seen, path):
    parts = path.strip("/").split("/")[:-1]
    for i in range(len(parts)):
        d = "/".join(parts[: i + 1])
        if d not in seen:
            seen.add(d)
            info = tarfile.TarInfo(d)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 0
            tar.addfile(info)


def layer(args):
    entries = []  # (path, kind, payload, mode)
    for spec in args.dir:
        dest, _, mode = spec.partition(":")
        entries.append((dest.strip("/"), "dir", None, int(mode or "755", 8)))
    for spec in args.file:
        src, dest, *mode = spec.split(":")
        with open(src, "rb") as f:
            data = f.read()
        entries.append((dest.strip("/"), "file", data, int(mode[0] if mode else "755", 8)))
    for spec in args.symlink:
        dest, target = spec.split(":", 1)
        entries.append((dest.strip("/"), "symlink", target, 0o777))
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        seen = set()
        for path, kind, payload, mode in sorted(entries, key=lambda e: e[0]):
            add_parents(tar, seen, path)
            info = tarfile.TarInfo(path)
            info.mode, info.mtime, info.uid, info.gid = mode, 0, 0, 0
            if kind == "dir":
                if path in seen:
                    continue
                seen.add(path)
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            elif kind == "file":
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
            else:
                info.type, info.linkname = tarfile.SYMTYPE, payload
                tar.addfile(info)
    return buf.getvalue()


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tag", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--entrypoint", action="append", default=[])
    p.add_argument("--cmd", action="append", default=[])
    p.add_argument("--user", default="")
    p.add_argument("--workdir", default="/")
    p.add_argument("--env", action="append", default=[])
    p.add_argument("--file", action="append", default=[])
    p.add_argument("--symlink", action="append", default=[])
    p.add_argument("--dir", action="append", default=[])
    args = p.parse_args()

    layer_tar = layer(args)
    diff_id = "sha256:" + hashlib.sha256(layer_tar).hexdigest()
    config = {
        "architecture": "amd64",
        "os": "linux",
        "created": "1970-01-01T00:00:00Z",
        "config": {
            "Entrypoint": args.entrypoint or None,
            "Cmd": args.cmd or None,
            "User": args.user,
            "WorkingDir": args.workdir,
            "Env": ["PATH=/bin"] + args.env,
        },
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "hack/node/oci_image.py"}],
    }
    config_json = json.dumps(config, sort_keys=True, separators=(",", ":")).encode()
    config_name = hashlib.sha256(config_json).hexdigest() + ".json"
    layer_name = diff_id.split(":")[1] + "/layer.tar"
    manifest = json.dumps(
        [{"Config": config_name, "RepoTags": [args.tag], "Layers": [layer_name]}]
    ).encode()

    tmp = args.out + ".tmp"
    with tarfile.open(tmp, mode="w") as out:
        for name, data in ((layer_name, layer_tar), (config_name, config_json), ("manifest.json", manifest)):
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            out.addfile(info, io.BytesIO(data))
    os.replace(tmp, args.out)
    print(config_name[:-5])


if __name__ == "__main__":
    main()
