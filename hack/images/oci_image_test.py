"""Tests of oci_image.py: `python3 -m unittest discover --start-directory hack --pattern '*_test.py'`."""

import contextlib
import hashlib
import io
import json
import os
import sys
import tarfile
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import oci_image  # noqa: E402


def run(argv):
    """oci_image.main, its messages kept out of the test output."""
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        return oci_image.main(argv)


def make_tree(root):
    os.makedirs(os.path.join(root, "usr/bin"))
    os.makedirs(os.path.join(root, "etc"))
    os.makedirs(os.path.join(root, "dev"))
    os.makedirs(os.path.join(root, "proc/1"))
    os.makedirs(os.path.join(root, "var/secret"))
    os.chmod(os.path.join(root, "var/secret"), 0o700)
    with open(os.path.join(root, "usr/bin/tool"), "w") as f:
        f.write("#!/bin/sh\necho hi\n")
    os.chmod(os.path.join(root, "usr/bin/tool"), 0o755)
    os.link(os.path.join(root, "usr/bin/tool"), os.path.join(root, "usr/bin/tool2"))
    os.symlink("tool", os.path.join(root, "usr/bin/alias"))
    with open(os.path.join(root, "etc/config"), "w") as f:
        f.write("x=1\n")
    os.chmod(os.path.join(root, "etc/config"), 0o640)
    with open(os.path.join(root, "dev/null-ish"), "w") as f:
        f.write("runtime only\n")


class BuildTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.addCleanup(self.tmp.cleanup)
        self.root = os.path.join(self.tmp.name, "root")
        make_tree(self.root)
        self.binary = os.path.join(self.tmp.name, "app")
        with open(self.binary, "wb") as f:
            f.write(b"\x7fELF binary")
        os.chmod(self.binary, 0o600)

    def build(self, out, *extra):
        argv = [
            "build",
            "--rootfs",
            self.root,
            "--add",
            f"{self.binary}:/usr/local/bin/app:0755",
            "--add",
            f"{self.binary}:/opt/data/app.copy:0640:1000:1001",
            "--tag",
            "flashsale/test:local",
            "--entrypoint",
            '["/usr/local/bin/app"]',
            "--cmd",
            '["serve"]',
            "--user",
            "65532:65532",
            "--env",
            "PATH=/usr/local/bin:/usr/bin",
            "--env",
            "A=b=c",
            "--expose",
            "8080",
            "--expose",
            "9093/tcp",
            "--workdir",
            "/data",
            "--volume",
            "/data",
            "--stop-signal",
            "SIGINT",
            "--output",
            out,
            *extra,
        ]
        self.assertEqual(run(argv), 0)

    def archive(self, path):
        outer = tarfile.open(path)
        self.addCleanup(outer.close)
        manifest = json.load(outer.extractfile("manifest.json"))
        config = json.load(outer.extractfile(manifest[0]["Config"]))
        layer_bytes = outer.extractfile(manifest[0]["Layers"][0]).read()
        return outer, manifest, config, layer_bytes

    def test_docker_archive_layout_and_config(self):
        out = os.path.join(self.tmp.name, "img.tar")
        self.build(out)
        outer, manifest, config, layer_bytes = self.archive(out)
        self.assertEqual(manifest[0]["RepoTags"], ["flashsale/test:local"])
        diff_id = hashlib.sha256(layer_bytes).hexdigest()
        self.assertEqual(config["rootfs"], {"type": "layers", "diff_ids": [f"sha256:{diff_id}"]})
        self.assertEqual(manifest[0]["Layers"], [f"{diff_id}/layer.tar"])
        config_bytes = outer.extractfile(manifest[0]["Config"]).read()
        self.assertEqual(manifest[0]["Config"], hashlib.sha256(config_bytes).hexdigest() + ".json")
        c = config["config"]
        self.assertEqual(c["Entrypoint"], ["/usr/local/bin/app"])
        self.assertEqual(c["Cmd"], ["serve"])
        self.assertEqual(c["User"], "65532:65532")
        self.assertEqual(c["Env"], ["PATH=/usr/local/bin:/usr/bin", "A=b=c"])
        self.assertEqual(c["ExposedPorts"], {"8080/tcp": {}, "9093/tcp": {}})
        self.assertEqual(c["WorkingDir"], "/data")
        self.assertEqual(c["Volumes"], {"/data": {}})
        self.assertEqual(c["StopSignal"], "SIGINT")
        self.assertEqual((config["os"], config["architecture"]), ("linux", "amd64"))
        repos = json.load(outer.extractfile("repositories"))
        self.assertEqual(repos, {"flashsale/test": {"local": diff_id}})

    def test_layer_modes_ownership_links_and_mtimes(self):
        out = os.path.join(self.tmp.name, "img.tar")
        self.build(out)
        _, _, _, layer_bytes = self.archive(out)
        with tarfile.open(fileobj=io.BytesIO(layer_bytes)) as layer:
            members = {m.name: m for m in layer.getmembers()}
        names = list(members)
        self.assertEqual(names, sorted(names, key=lambda p: p.split("/")), "parents first, sorted")
        self.assertIn("dev", members)
        self.assertNotIn("dev/null-ish", members, "the runtime provides /dev")
        self.assertIn("proc", members)
        self.assertNotIn("proc/1", members)
        self.assertEqual(members["var/secret"].mode, 0o700)
        self.assertEqual(members["etc/config"].mode, 0o640)
        self.assertTrue(members["usr/bin/alias"].issym())
        self.assertEqual(members["usr/bin/alias"].linkname, "tool")
        # One of the two names of the hard-linked file carries the data, the other links to it.
        pair = [members["usr/bin/tool"], members["usr/bin/tool2"]]
        self.assertEqual(sorted(m.islnk() for m in pair), [False, True])
        app = members["usr/local/bin/app"]
        self.assertEqual((app.mode, app.uid, app.gid, app.size), (0o755, 0, 0, 11))
        copy = members["opt/data/app.copy"]
        self.assertEqual((copy.mode, copy.uid, copy.gid), (0o640, 1000, 1001))
        self.assertTrue(members["opt/data"].isdir(), "parents of an --add are created")
        self.assertEqual({m.mtime for m in members.values()}, {oci_image.DEFAULT_EPOCH})
        self.assertEqual({(m.uname, m.gname) for m in members.values()}, {("", "")})

    def test_same_tree_same_bytes(self):
        a, b = (os.path.join(self.tmp.name, n) for n in ("a.tar", "b.tar"))
        self.build(a)
        # A touched file (new mtime, same content) changes nothing.
        os.utime(os.path.join(self.root, "etc/config"), (1, 1))
        self.build(b)
        with open(a, "rb") as fa, open(b, "rb") as fb:
            self.assertEqual(fa.read(), fb.read())

    def test_source_date_epoch(self):
        out = os.path.join(self.tmp.name, "img.tar")
        os.environ["SOURCE_DATE_EPOCH"] = "1000"
        self.addCleanup(os.environ.pop, "SOURCE_DATE_EPOCH")
        self.build(out)
        _, _, config, _ = self.archive(out)
        self.assertEqual(config["created"], "1970-01-01T00:16:40Z")

    def test_inspect_and_unpack(self):
        out = os.path.join(self.tmp.name, "img.tar")
        self.build(out)
        entry, config, layers, size = oci_image.read_archive(out)
        self.assertEqual(entry["RepoTags"], ["flashsale/test:local"])
        self.assertEqual(len(layers), 1)
        self.assertGreater(size, 0)
        dest = os.path.join(self.tmp.name, "unpacked")
        self.assertEqual(run(["unpack", out, dest]), 0)
        self.assertTrue(os.path.islink(os.path.join(dest, "usr/bin/alias")))
        self.assertEqual(os.stat(os.path.join(dest, "usr/local/bin/app")).st_mode & 0o7777, 0o755)
        self.assertEqual(os.stat(os.path.join(dest, "var/secret")).st_mode & 0o7777, 0o700)
        with open(os.path.join(dest, "usr/bin/tool2")) as f:
            self.assertEqual(f.read(), "#!/bin/sh\necho hi\n")

    def test_bad_arguments_fail(self):
        out = os.path.join(self.tmp.name, "img.tar")
        for extra in (["--entrypoint", '"/bin/sh"'], ["--env", "NOEQUALS"], ["--add", "a:relative"]):
            with self.subTest(extra=extra):
                argv = ["build", "--rootfs", self.root, "--tag", "x:1", "--output", out, *extra]
                self.assertEqual(run(argv), 1)
        self.assertEqual(run(["build", "--rootfs", self.root, "--tag", "x", "--output", out]), 1)
        self.assertFalse(os.path.exists(out))


class RuncConfigTest(unittest.TestCase):
    def test_command_and_args_follow_kubernetes(self):
        image = {"Entrypoint": ["/entry.sh"], "Cmd": ["postgres"]}
        self.assertEqual(oci_image.process_args(image, None, None), ["/entry.sh", "postgres"])
        self.assertEqual(oci_image.process_args(image, None, ["-c", "x=1"]), ["/entry.sh", "-c", "x=1"])
        self.assertEqual(oci_image.process_args(image, ["redis-server"], None), ["redis-server"])
        self.assertEqual(oci_image.process_args(image, ["redis-server"], ["--port", "1"]), ["redis-server", "--port", "1"])
        with self.assertRaises(ValueError):
            oci_image.process_args({}, None, None)

    def test_env_and_user(self):
        env = oci_image.merged_env({"Env": ["PATH=/x", "A=1"]}, ["A=2", "B=3"])
        self.assertEqual(env, ["PATH=/x", "A=2", "B=3"])
        self.assertTrue(oci_image.merged_env({}, [])[0].startswith("PATH=/usr/local/sbin"))
        self.assertEqual(oci_image.parse_user("999"), (999, 999))
        self.assertEqual(oci_image.parse_user("65532:65533"), (65532, 65533))
        with self.assertRaises(ValueError):
            oci_image.parse_user("postgres")

    def test_config_json(self):
        with tempfile.TemporaryDirectory() as tmp:
            root = os.path.join(tmp, "root")
            make_tree(root)
            img = os.path.join(tmp, "img.tar")
            argv = ["build", "--rootfs", root, "--tag", "t/x:1", "--entrypoint", '["/e"]', "--cmd", '["c"]']
            self.assertEqual(run(argv + ["--user", "999:999", "--env", "K=v", "--output", img]), 0)
            out = os.path.join(tmp, "config.json")
            argv = ["runc-config", img, "--rootfs", root, "--args", '["-c","a=b"]', "--env", "P=q",
                    "--bind", f"{tmp}:/data", "--bind", f"{tmp}:/etc/ro:ro", "--tmpfs", "/tmp",
                    "--readonly", "--host-network", "--output", out]
            self.assertEqual(run(argv), 0)
            with open(out) as f:
                spec = json.load(f)
        p = spec["process"]
        self.assertEqual(p["args"], ["/e", "-c", "a=b"])
        self.assertEqual(p["user"]["uid"], 999)
        self.assertIn("K=v", p["env"])
        self.assertIn("P=q", p["env"])
        self.assertTrue(p["noNewPrivileges"])
        self.assertEqual(p["capabilities"]["effective"], [])
        self.assertTrue(spec["root"]["readonly"])
        mounts = {m["destination"]: m for m in spec["mounts"]}
        self.assertEqual(mounts["/data"]["options"], ["rbind", "rw"])
        self.assertEqual(mounts["/etc/ro"]["options"], ["rbind", "ro"])
        self.assertEqual(mounts["/tmp"]["type"], "tmpfs")
        self.assertNotIn("network", [n["type"] for n in spec["linux"]["namespaces"]])


if __name__ == "__main__":
    unittest.main()
