"""Tests of the images' entry points (hack/images/*-entrypoint.sh) with stand-in commands on PATH:
what they write and what they run, without Postgres, Redis or a JVM. Needs bash."""

import os
import stat
import subprocess
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))

# A stand-in that records its name, arguments and stdin, one call per line block.
FAKE = """#!/bin/bash
{ printf '%s' "$(basename "$0")"; for a; do printf ' [%s]' "$a"; done; echo; } >>"$CALLS"
if [[ $(basename "$0") == psql ]]; then cat >>"$CALLS"; fi
"""


class EntrypointCase(unittest.TestCase):
    def setUp(self):
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        self.tmp = tmp.name
        self.bin = os.path.join(self.tmp, "bin")
        os.makedirs(self.bin)
        self.calls = os.path.join(self.tmp, "calls")

    def fake(self, name, body=FAKE):
        path = os.path.join(self.bin, name)
        with open(path, "w") as f:
            f.write(body)
        os.chmod(path, os.stat(path).st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)

    def run_script(self, script, args, env):
        full = {"PATH": f"{self.bin}:/usr/bin:/bin", "CALLS": self.calls, **env}
        return subprocess.run(
            ["bash", os.path.join(HERE, script), *args], env=full, capture_output=True, text=True, timeout=30
        )

    def recorded(self):
        with open(self.calls) as f:
            return f.read()


class KafkaEntrypointTest(EntrypointCase):
    def property_name(self, var):
        script = os.path.join(HERE, "kafka-entrypoint.sh")
        code = f'eval "$(sed -n "/^property_name()/,/^}}/p" {script})"; property_name {var}'
        return subprocess.run(["bash", "-c", code], capture_output=True, text=True, check=True).stdout

    def test_names_follow_apache_kafka(self):
        self.assertEqual(self.property_name("KAFKA_LOG_DIRS"), "log.dirs")
        self.assertEqual(self.property_name("KAFKA_CONTROLLER_QUORUM_VOTERS"), "controller.quorum.voters")
        self.assertEqual(self.property_name("KAFKA_A__B"), "a_b")
        self.assertEqual(self.property_name("KAFKA_A___B_C"), "a-b.c")

    def test_server_properties_and_commands(self):
        self.fake("java")
        config = os.path.join(self.tmp, "config")
        r = self.run_script(
            "kafka-entrypoint.sh",
            [],
            {
                "CLUSTER_ID": "AAAAAAAAAAAAAAAAAAAAAA",
                "KAFKA_CONFIG_DIR": config,
                "KAFKA_NODE_ID": "1",
                "KAFKA_PROCESS_ROLES": "broker,controller",
                "KAFKA_CONTROLLER_QUORUM_VOTERS": "1@localhost:9093",
                "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
                "KAFKA_HEAP_OPTS": "-Xms512m -Xmx512m",
                "KAFKA_OPTS": "-Dx=y",
            },
        )
        self.assertEqual(r.returncode, 0, r.stderr)
        with open(os.path.join(config, "server.properties")) as f:
            props = [line for line in f.read().splitlines() if not line.startswith("#")]
        self.assertEqual(
            props,
            [
                "controller.quorum.voters=1@localhost:9093",
                "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
                "node.id=1",
                "process.roles=broker,controller",
            ],
            "the JVM's variables are not properties",
        )
        format_call, server_call = self.recorded().splitlines()
        self.assertIn("[kafka.tools.StorageTool] [format] [-t] [AAAAAAAAAAAAAAAAAAAAAA]", format_call)
        self.assertIn("[-g]", format_call)
        self.assertNotIn("--standalone", format_call, "a static quorum (voters) is formatted without it")
        self.assertIn("[-Xms512m] [-Xmx512m]", server_call)
        self.assertIn("[-Dx=y]", server_call)
        self.assertTrue(server_call.endswith(f"[kafka.Kafka] [{config}/server.properties]"))

    def test_missing_cluster_id_fails(self):
        self.fake("java")
        r = self.run_script("kafka-entrypoint.sh", [], {"KAFKA_PROCESS_ROLES": "broker", "KAFKA_CONFIG_DIR": self.tmp})
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("CLUSTER_ID", r.stderr)

    def test_arguments_are_run_instead(self):
        self.fake("kafka-topics.sh")
        r = self.run_script("kafka-entrypoint.sh", ["kafka-topics.sh", "--list"], {})
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(self.recorded(), "kafka-topics.sh [--list]\n")


class PostgresEntrypointTest(EntrypointCase):
    def setUp(self):
        super().setUp()
        self.fake("id", "#!/bin/sh\necho 999\n")
        # initdb makes what the entry point then looks at and appends to.
        self.fake(
            "initdb",
            FAKE + 'for a; do [[ $a == --pwfile=* ]] && cat "${a#--pwfile=}" >>"$CALLS"; done\n'
            'echo 15 >"$PGDATA/PG_VERSION"; : >"$PGDATA/pg_hba.conf"\n',
        )
        for name in ("pg_ctl", "psql", "postgres"):
            self.fake(name)
        self.pgdata = os.path.join(self.tmp, "data", "pgdata")

    def env(self, **extra):
        return {"PGDATA": self.pgdata, "POSTGRES_USER": "flashsale", "POSTGRES_DB": "flashsale", **extra}

    def test_first_start_initialises_then_runs_postgres_with_the_args(self):
        r = self.run_script("postgres-entrypoint.sh", ["-c", "max_connections=80"], self.env(POSTGRES_PASSWORD="s3cret"))
        self.assertEqual(r.returncode, 0, r.stderr)
        calls = self.recorded()
        self.assertIn("initdb [--username=flashsale]", calls)
        self.assertIn("s3cret\n", calls, "the password goes to initdb through --pwfile")
        self.assertIn('CREATE DATABASE :"db";', calls)
        self.assertIn("[--set] [db=flashsale]", calls)
        self.assertTrue(calls.endswith("postgres [-c] [max_connections=80]\n"))
        with open(os.path.join(self.pgdata, "pg_hba.conf")) as f:
            self.assertIn("host all all all scram-sha-256", f.read())
        self.assertEqual(os.stat(self.pgdata).st_mode & 0o777, 0o700)

    def test_second_start_skips_init(self):
        os.makedirs(self.pgdata)
        with open(os.path.join(self.pgdata, "PG_VERSION"), "w") as f:
            f.write("15\n")
        r = self.run_script("postgres-entrypoint.sh", ["postgres"], self.env(POSTGRES_PASSWORD="x"))
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(self.recorded(), "postgres\n")

    def test_no_password_refused_unless_trust(self):
        r = self.run_script("postgres-entrypoint.sh", ["postgres"], self.env())
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("POSTGRES_PASSWORD", r.stderr)
        r = self.run_script("postgres-entrypoint.sh", ["postgres"], self.env(POSTGRES_HOST_AUTH_METHOD="trust"))
        self.assertEqual(r.returncode, 0, r.stderr)

    def test_root_refused(self):
        self.fake("id", "#!/bin/sh\necho 0\n")
        r = self.run_script("postgres-entrypoint.sh", ["postgres"], self.env(POSTGRES_PASSWORD="x"))
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("root", r.stderr)


class RedisEntrypointTest(EntrypointCase):
    def test_flags_go_to_redis_server_without_protected_mode(self):
        self.fake("redis-server")
        r = self.run_script("redis-entrypoint.sh", ["--port", "6379"], {})
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(self.recorded(), "redis-server [--port] [6379] [--protected-mode] [no]\n")

    def test_a_config_file_is_left_alone(self):
        self.fake("redis-server")
        r = self.run_script("redis-entrypoint.sh", ["/etc/redis.conf"], {})
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(self.recorded(), "redis-server [/etc/redis.conf]\n")


if __name__ == "__main__":
    unittest.main()
