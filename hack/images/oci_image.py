#!/usr/bin/env python3
"""Container images without Docker: a directory tree to a docker-archive tarball, and back.

    oci_image.py build --rootfs DIR [--add SRC:DEST[:MODE[:UID:GID]]]... --tag NAME:TAG
                       [--entrypoint JSON] [--cmd JSON] [--user U[:G]] [--env K=V]...
                       [--expose PORT[/PROTO]]... [--workdir DIR] [--volume DIR]...
                       [--stop-signal SIG] [--label K=V]... --output FILE.tar
    oci_image.py inspect FILE.tar        the tag, config and layer size as JSON
    oci_image.py unpack FILE.tar DIR     the layer extracted (ownership and modes kept)
    oci_image.py runc-config FILE.tar --rootfs DIR [--command JSON] [--args JSON] [--env K=V]...
                       [--user UID:GID] [--bind SRC:DEST[:ro]]... [--tmpfs DEST]...
                       [--readonly] [--host-network] --output config.json

The archive is what `docker save` writes and `docker load` / `ctr images import` read:
manifest.json, the image config (<sha256>.json) and one uncompressed layer (<sha256>/layer.tar).
Everything is deterministic: entries sorted, every mtime set to SOURCE_DATE_EPOCH (default
2024-01-01), ownership and modes taken from the tree (numeric, no user names), so the same tree
gives the same image id. Python's standard library only.
"""

import argparse
import hashlib
import io
import json
import os
import stat
import sys
import tarfile
import tempfile
import time

DEFAULT_EPOCH = 1704067200  # 2024-01-01T00:00:00Z
# Left out of the layer (their mount points are kept, empty): the runtime provides them.
RUNTIME_DIRS = ("dev", "proc", "sys")
CHUNK = 1 << 20
# Our own archives: extracted as they are (Python >= 3.11.4 asks; older ones have no filters).
TRUSTED = {"filter": "fully_trusted"} if hasattr(tarfile, "fully_trusted_filter") else {}


def epoch():
    value = os.environ.get("SOURCE_DATE_EPOCH", "")
    return int(value) if value.strip() else DEFAULT_EPOCH


def parse_add(spec):
    """SRC:DEST[:MODE[:UID:GID]] -> (src, dest, mode or None, uid, gid)."""
    parts = spec.split(":")
    if len(parts) not in (2, 3, 5):
        raise ValueError(f"--add {spec!r}: want SRC:DEST[:MODE[:UID:GID]]")
    src, dest = parts[0], parts[1]
    if not dest.startswith("/"):
        raise ValueError(f"--add {spec!r}: DEST must be absolute")
    mode = int(parts[2], 8) if len(parts) >= 3 and parts[2] else None
    uid, gid = (int(parts[3]), int(parts[4])) if len(parts) == 5 else (0, 0)
    return src, dest, mode, uid, gid


def parse_kv(pairs, what):
    out = []
    for pair in pairs:
        if "=" not in pair:
            raise ValueError(f"{what} {pair!r}: want KEY=VALUE")
        out.append(pair)
    return out


def normalize(info, mtime):
    """Fields that would differ between machines or runs, fixed."""
    info.mtime = mtime
    info.uname = ""
    info.gname = ""
    info.pax_headers = {}
    return info


def walk(root):
    """Every path under root, relative, sorted so parents come before children."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        rel = "" if rel == "." else rel
        if rel in RUNTIME_DIRS:
            dirnames[:] = []
            continue
        dirnames.sort()
        for name in dirnames + sorted(filenames):
            out.append(os.path.join(rel, name) if rel else name)
    return sorted(out, key=lambda p: p.split("/"))


def parents(dest):
    """The directories leading to dest, outermost first ("usr", "usr/local", ...)."""
    parts = dest.strip("/").split("/")[:-1]
    return ["/".join(parts[: i + 1]) for i in range(len(parts))]


def write_layer(out, rootfs, adds, mtime):
    """Writes the layer tar to the binary file `out`: the tree with each --add on top (replacing
    a file of the same name), the directories leading to an --add made where the tree has none,
    all in one sorted order, parents first."""
    entries = {rel: ("tree", os.path.join(rootfs, rel)) for rel in (walk(rootfs) if rootfs else [])}
    for src, dest, mode, uid, gid in adds:
        for parent in parents(dest):
            entries.setdefault(parent, ("dir", None))
        entries[dest.strip("/")] = ("add", (src, mode, uid, gid))
    with tarfile.open(fileobj=out, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for rel in sorted(entries, key=lambda p: p.split("/")):
            kind, what = entries[rel]
            if kind == "dir":
                info = tarfile.TarInfo(rel)
                info.type = tarfile.DIRTYPE
                info.mode = 0o755
                tar.addfile(normalize(info, mtime))
                continue
            path = what if kind == "tree" else what[0]
            info = tar.gettarinfo(path, arcname=rel)
            if info is None:  # sockets and the like
                continue
            normalize(info, mtime)
            if kind == "add":
                _, mode, info.uid, info.gid = what
                if info.islnk():  # an --add is its own file, even when hard-linked where it comes from
                    info.type, info.linkname, info.size = tarfile.REGTYPE, "", os.stat(path).st_size
                if mode is not None:
                    info.mode = mode
            if info.isreg():
                with open(path, "rb") as f:
                    tar.addfile(info, f)
            else:
                tar.addfile(info)


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def image_config(args, diff_id, mtime):
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(mtime))
    config = {"Env": parse_kv(args.env, "--env")}
    if args.entrypoint is not None:
        config["Entrypoint"] = json.loads(args.entrypoint)
    if args.cmd is not None:
        config["Cmd"] = json.loads(args.cmd)
    if args.user:
        config["User"] = args.user
    if args.workdir:
        config["WorkingDir"] = args.workdir
    if args.stop_signal:
        config["StopSignal"] = args.stop_signal
    if args.expose:
        config["ExposedPorts"] = {(p if "/" in p else f"{p}/tcp"): {} for p in args.expose}
    if args.volume:
        config["Volumes"] = {v: {} for v in args.volume}
    if args.label:
        config["Labels"] = dict(kv.split("=", 1) for kv in parse_kv(args.label, "--label"))
    for key in ("Entrypoint", "Cmd"):
        value = config.get(key)
        if value is not None and not (
            isinstance(value, list) and all(isinstance(s, str) for s in value)
        ):
            raise ValueError(f"--{key.lower()}: want a JSON array of strings")
    return {
        "architecture": args.architecture,
        "os": "linux",
        "created": created,
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{diff_id}"]},
        "history": [{"created": created, "created_by": "hack/images/oci_image.py"}],
    }


def add_bytes(tar, name, data, mtime):
    info = normalize(tarfile.TarInfo(name), mtime)
    info.size = len(data)
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


def build(args):
    mtime = epoch()
    adds = [parse_add(a) for a in args.add]
    if ":" not in args.tag.rsplit("/", 1)[-1]:
        raise ValueError(f"--tag {args.tag!r}: want NAME:TAG")
    out_dir = os.path.dirname(os.path.abspath(args.output))
    os.makedirs(out_dir, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=".oci-") as tmp:
        layer_path = os.path.join(tmp, "layer.tar")
        with open(layer_path, "wb") as f:
            write_layer(f, args.rootfs, adds, mtime)
        diff_id = sha256_file(layer_path)
        config = json.dumps(image_config(args, diff_id, mtime), sort_keys=True).encode()
        config_id = hashlib.sha256(config).hexdigest()
        manifest = [
            {"Config": f"{config_id}.json", "RepoTags": [args.tag], "Layers": [f"{diff_id}/layer.tar"]}
        ]
        repo, tag = args.tag.rsplit(":", 1)
        tmp_out = os.path.join(tmp, "image.tar")
        with tarfile.open(tmp_out, "w", format=tarfile.GNU_FORMAT) as tar:
            d = normalize(tarfile.TarInfo(diff_id), mtime)
            d.type = tarfile.DIRTYPE
            d.mode = 0o755
            tar.addfile(d)
            add_bytes(tar, f"{diff_id}/VERSION", b"1.0", mtime)
            info = normalize(tar.gettarinfo(layer_path, arcname=f"{diff_id}/layer.tar"), mtime)
            info.uid = info.gid = 0
            info.mode = 0o644
            with open(layer_path, "rb") as f:
                tar.addfile(info, f)
            add_bytes(tar, f"{config_id}.json", config, mtime)
            add_bytes(tar, "manifest.json", json.dumps(manifest).encode(), mtime)
            add_bytes(tar, "repositories", json.dumps({repo: {tag: diff_id}}).encode(), mtime)
        os.replace(tmp_out, args.output)
    print(f"{args.tag} sha256:{config_id} {args.output}")


def read_archive(path):
    """(manifest entry, config dict, layer member name, layer size) of a one-image archive."""
    with tarfile.open(path) as tar:
        manifest = json.load(tar.extractfile("manifest.json"))
        if len(manifest) != 1:
            raise ValueError(f"{path}: {len(manifest)} images, want 1")
        entry = manifest[0]
        config = json.load(tar.extractfile(entry["Config"]))
        layers = entry["Layers"]
        size = sum(tar.getmember(layer).size for layer in layers)
    return entry, config, layers, size


def inspect(args):
    entry, config, layers, size = read_archive(args.archive)
    print(
        json.dumps(
            {
                "tags": entry["RepoTags"],
                "id": "sha256:" + entry["Config"].removesuffix(".json"),
                "layers": len(layers),
                "size": size,
                "config": config["config"],
            },
            indent=2,
            sort_keys=True,
        )
    )


def unpack(args):
    _, _, layers, _ = read_archive(args.archive)
    os.makedirs(args.dir, exist_ok=True)
    with tarfile.open(args.archive) as outer:
        for layer in layers:
            with tarfile.open(fileobj=outer.extractfile(layer), mode="r|") as tar:
                for member in tar:
                    if os.geteuid() != 0 and (member.ischr() or member.isblk()):
                        continue
                    tar.extract(member, args.dir, numeric_owner=True, **TRUSTED)


def split_mount(spec, what):
    parts = spec.split(":")
    if len(parts) not in (2, 3) or (len(parts) == 3 and parts[2] not in ("ro", "rw")):
        raise ValueError(f"{what} {spec!r}: want SRC:DEST[:ro]")
    return parts[0], parts[1], len(parts) == 3 and parts[2] == "ro"


def process_args(config, command, cmd_args):
    """What a kubelet runs: `command` replaces Entrypoint (and drops Cmd), `args` replaces Cmd."""
    entrypoint = config.get("Entrypoint") or []
    cmd = config.get("Cmd") or []
    if command is not None:
        entrypoint, cmd = command, []
    if cmd_args is not None:
        cmd = cmd_args
    argv = list(entrypoint) + list(cmd)
    if not argv:
        raise ValueError("the image has neither Entrypoint nor Cmd, and none was given")
    return argv


def merged_env(config, extra):
    env = dict(kv.split("=", 1) for kv in config.get("Env") or [])
    env.update(dict(kv.split("=", 1) for kv in parse_kv(extra, "--env")))
    env.setdefault("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
    return [f"{k}={v}" for k, v in env.items()]


def parse_user(user):
    """"UID[:GID]" with numbers only (as runAsNonRoot wants); a missing GID is the UID's."""
    uid, _, gid = (user or "0").partition(":")
    if not uid.isdigit() or (gid and not gid.isdigit()):
        raise ValueError(f"user {user!r}: want numeric UID[:GID]")
    return int(uid), int(gid or uid)


def runc_config(args):
    _, config, _, _ = read_archive(args.archive)
    image = config["config"]
    uid, gid = parse_user(args.user or image.get("User"))
    mounts = [
        {"destination": "/proc", "type": "proc", "source": "proc"},
        {
            "destination": "/dev",
            "type": "tmpfs",
            "source": "tmpfs",
            "options": ["nosuid", "strictatime", "mode=755", "size=65536k"],
        },
        {
            "destination": "/dev/pts",
            "type": "devpts",
            "source": "devpts",
            "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"],
        },
        {
            "destination": "/dev/shm",
            "type": "tmpfs",
            "source": "shm",
            "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=268435456"],
        },
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]},
    ]
    for spec in args.bind:
        src, dest, ro = split_mount(spec, "--bind")
        mounts.append(
            {
                "destination": dest,
                "type": "bind",
                "source": os.path.abspath(src),
                "options": ["rbind", "ro" if ro else "rw"],
            }
        )
    for dest in args.tmpfs:
        mounts.append(
            {"destination": dest, "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev", "mode=1777"]}
        )
    namespaces = [{"type": t} for t in ("pid", "ipc", "uts", "mount")]
    if not args.host_network:
        namespaces.append({"type": "network"})
    # What a hardened pod gets: every capability dropped, no privilege escalation.
    spec = {
        "ociVersion": "1.0.2",
        "process": {
            "terminal": False,
            "user": {"uid": uid, "gid": gid, "additionalGids": [gid]},
            "args": process_args(image, json_or_none(args.command), json_or_none(args.args)),
            "env": merged_env(image, args.env),
            "cwd": image.get("WorkingDir") or "/",
            "capabilities": {k: [] for k in ("bounding", "effective", "inheritable", "permitted", "ambient")},
            "noNewPrivileges": True,
        },
        "root": {"path": os.path.abspath(args.rootfs), "readonly": args.readonly},
        "hostname": args.hostname,
        "mounts": mounts,
        "linux": {
            "namespaces": namespaces,
            "maskedPaths": ["/proc/kcore", "/proc/keys", "/proc/timer_list", "/sys/firmware"],
            "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"],
        },
    }
    with open(args.output, "w") as f:
        json.dump(spec, f, indent=2)


def json_or_none(value):
    if value is None:
        return None
    parsed = json.loads(value)
    if not isinstance(parsed, list) or not all(isinstance(s, str) for s in parsed):
        raise ValueError(f"{value!r}: want a JSON array of strings")
    return parsed


def parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command_name", required=True)
    b = sub.add_parser("build", help="a directory tree to a docker-archive tarball")
    b.add_argument("--rootfs", help="the tree the layer holds")
    b.add_argument("--add", action="append", default=[], help="SRC:DEST[:MODE[:UID:GID]] (default owner 0:0)")
    b.add_argument("--tag", required=True)
    b.add_argument("--entrypoint", help="JSON array")
    b.add_argument("--cmd", help="JSON array")
    b.add_argument("--user")
    b.add_argument("--env", action="append", default=[])
    b.add_argument("--expose", action="append", default=[])
    b.add_argument("--workdir")
    b.add_argument("--stop-signal", help="e.g. SIGINT (what a runtime sends to stop the container)")
    b.add_argument("--volume", action="append", default=[])
    b.add_argument("--label", action="append", default=[])
    b.add_argument("--architecture", default="amd64")
    b.add_argument("--output", required=True)
    b.set_defaults(func=build)
    i = sub.add_parser("inspect", help="tag, id, size and config of an archive")
    i.add_argument("archive")
    i.set_defaults(func=inspect)
    u = sub.add_parser("unpack", help="extract an archive's layers into DIR")
    u.add_argument("archive")
    u.add_argument("dir")
    u.set_defaults(func=unpack)
    r = sub.add_parser("runc-config", help="a runc config.json running the image as a kubelet would")
    r.add_argument("archive")
    r.add_argument("--rootfs", required=True)
    r.add_argument("--command", help="JSON array: replaces Entrypoint (and Cmd), as a container's command")
    r.add_argument("--args", help="JSON array: replaces Cmd, as a container's args")
    r.add_argument("--env", action="append", default=[])
    r.add_argument("--user", help="UID:GID (default: the image's User)")
    r.add_argument("--bind", action="append", default=[])
    r.add_argument("--tmpfs", action="append", default=[])
    r.add_argument("--readonly", action="store_true")
    r.add_argument("--host-network", action="store_true")
    r.add_argument("--hostname", default="flashsale")
    r.add_argument("--output", required=True)
    r.set_defaults(func=runc_config)
    return p


def main(argv=None):
    args = parser().parse_args(argv)
    try:
        args.func(args)
    except (ValueError, KeyError, OSError, tarfile.TarError) as e:
        print(f"oci_image.py: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
