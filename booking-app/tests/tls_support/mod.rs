//! Stores behind TLS for `store_tls`, started by the test itself on ports of their own
//! (18200-18299) with certificates it makes with the `openssl` CLI: Postgres with `ssl=on` and
//! only `hostssl` lines (a client certificate required), Redis with only a `--tls-port` (client
//! certificates required), and a Kafka broker whose only client listener is SASL_SSL (PLAIN and
//! SCRAM-SHA-512 users). Each server is a child process of the test, stopped by its pid when its
//! handle drops (a failing test too), its data under /tmp/tls-*. A missing binary fails loudly.
#![allow(dead_code)] // each test uses some of the servers

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Longest a server may take to start (a JVM and a KRaft quorum of one take ~5 s).
pub const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The user and password of the broker's SCRAM-SHA-512 and PLAIN accounts.
pub const SCRAM_USER: &str = "booking-scram";
pub const SCRAM_PASSWORD: &str = "scram-secret";
pub const PLAIN_USER: &str = "booking-plain";
pub const PLAIN_PASSWORD: &str = "plain-secret";

fn run(what: &str, command: &mut Command) {
    let output = command
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run {:?}: {e}", command.get_program()));
    assert!(
        output.status.success(),
        "{what} failed ({}): {}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A fresh directory /tmp/tls-<name> (a leftover of an earlier run is removed).
fn fresh_dir(name: &str) -> PathBuf {
    let dir = PathBuf::from(format!("/tmp/tls-{name}"));
    if dir.exists() {
        std::fs::remove_dir_all(&dir).unwrap_or_else(|e| panic!("remove {}: {e}", dir.display()));
    }
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    dir
}

/// A CA, a server certificate it signed for `localhost` and 127.0.0.1, a client certificate it
/// signed, and a second CA that signed nothing here (the "wrong CA"); removed when dropped.
pub struct Pki {
    pub dir: PathBuf,
}

impl Pki {
    pub fn generate(name: &str) -> Pki {
        let dir = fresh_dir(&format!("{name}-pki"));
        let openssl = |args: &[&str]| {
            run(
                "openssl (install the openssl CLI)",
                Command::new("openssl").args(args).current_dir(&dir),
            )
        };
        for ca in ["ca", "wrong-ca"] {
            openssl(&[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-days",
                "2",
                "-subj",
                &format!("/CN=flashsale test {ca}"),
                "-keyout",
                &format!("{ca}.key"),
                "-out",
                &format!("{ca}.crt"),
            ]);
        }
        for (leaf, usage) in [("server", "serverAuth"), ("client", "clientAuth")] {
            openssl(&[
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-out",
                &format!("{leaf}.key"),
            ]);
            openssl(&[
                "req",
                "-new",
                "-key",
                &format!("{leaf}.key"),
                "-subj",
                &format!("/CN=flashsale test {leaf}"),
                "-out",
                &format!("{leaf}.csr"),
            ]);
            std::fs::write(
                dir.join(format!("{leaf}.ext")),
                format!(
                    "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\n\
                     extendedKeyUsage={usage}\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n"
                ),
            )
            .unwrap();
            openssl(&[
                "x509",
                "-req",
                "-in",
                &format!("{leaf}.csr"),
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                &format!("{leaf}.ext"),
                "-out",
                &format!("{leaf}.crt"),
            ]);
        }
        Pki { dir }
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    pub fn ca(&self) -> PathBuf {
        self.file("ca.crt")
    }

    pub fn wrong_ca(&self) -> PathBuf {
        self.file("wrong-ca.crt")
    }

    pub fn client_cert(&self) -> PathBuf {
        self.file("client.crt")
    }

    pub fn client_key(&self) -> PathBuf {
        self.file("client.key")
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A server process of the test: stopped (`signal`, then SIGKILL after a few seconds) when the
/// handle drops, its directory removed.
pub struct Server {
    pub name: &'static str,
    child: Child,
    signal: &'static str,
    pub dir: PathBuf,
    log: PathBuf,
}

impl Server {
    fn spawn(
        name: &'static str,
        dir: PathBuf,
        signal: &'static str,
        command: &mut Command,
    ) -> Self {
        let log = dir.join("server.log");
        let out = std::fs::File::create(&log).unwrap();
        let child = command
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("{name}: cannot start {:?}: {e}", command.get_program()));
        Server {
            name,
            child,
            signal,
            dir,
            log,
        }
    }

    /// The server's output so far (for a failure message).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Polls `ready` until it is true; panics with the server's log if the server exits first
    /// or START_TIMEOUT passes.
    pub async fn wait_ready<F: Future<Output = bool>>(&mut self, mut ready: impl FnMut() -> F) {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!(
                    "{} exited ({status}) while starting:\n{}",
                    self.name,
                    self.log()
                );
            }
            if ready().await {
                return;
            }
            assert!(
                started.elapsed() < START_TIMEOUT,
                "{} not ready after {START_TIMEOUT:?}:\n{}",
                self.name,
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args([self.signal, &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if !matches!(self.child.try_wait(), Ok(None)) {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The user a server runs as: postgres refuses root, so as root it runs as `postgres`.
struct RunAs {
    uid: u32,
    gid: u32,
}

fn run_as_for_postgres() -> Option<RunAs> {
    let euid = std::fs::metadata("/proc/self").expect("/proc/self").uid();
    if euid != 0 {
        return None;
    }
    let passwd = std::fs::read_to_string("/etc/passwd").expect("/etc/passwd");
    let line = passwd
        .lines()
        .find(|l| l.starts_with("postgres:"))
        .expect("running as root, Postgres needs the `postgres` user (apt-get install postgresql)");
    let fields: Vec<&str> = line.split(':').collect();
    Some(RunAs {
        uid: fields[2].parse().unwrap(),
        gid: fields[3].parse().unwrap(),
    })
}

fn as_user(command: &mut Command, user: &Option<RunAs>) {
    use std::os::unix::process::CommandExt;
    if let Some(u) = user {
        // std drops root's supplementary groups when it sets the uid.
        command.uid(u.uid).gid(u.gid);
    }
}

/// Postgres binaries: PG_BIN (hack/.services.env) or the newest /usr/lib/postgresql/*/bin.
fn pg_bin() -> PathBuf {
    if let Some(dir) = std::env::var_os("PG_BIN").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|d| d.join("initdb").is_file())
        .collect();
    dirs.sort_by_key(|d| {
        d.parent()
            .and_then(|v| v.file_name()?.to_str()?.parse::<u32>().ok())
            .unwrap_or(0)
    });
    dirs.pop()
        .expect("no Postgres binaries: set PG_BIN or install postgresql (hack/services.sh up does)")
}

/// Postgres accepting only TLS connections that present a client certificate of the test's CA.
pub fn start_postgres(name: &'static str, pki: &Pki, port: u16) -> Server {
    let dir = fresh_dir(name);
    let user = run_as_for_postgres();
    for file in ["server.crt", "server.key", "ca.crt"] {
        std::fs::copy(pki.file(file), dir.join(file)).unwrap();
    }
    // Postgres insists its key is private to the server's user.
    run(
        "chmod",
        Command::new("chmod").arg("600").arg(dir.join("server.key")),
    );
    if let Some(u) = &user {
        run(
            "chown",
            Command::new("chown")
                .arg("-R")
                .arg(format!("{}:{}", u.uid, u.gid))
                .arg(&dir),
        );
    }
    let bin = pg_bin();
    let data = dir.join("data");
    let mut initdb = Command::new(bin.join("initdb"));
    initdb
        .arg("-D")
        .arg(&data)
        .args(["-U", "postgres", "-A", "trust", "--no-sync", "-E", "UTF8"])
        .current_dir("/");
    as_user(&mut initdb, &user);
    run("initdb", &mut initdb);
    // TLS or nothing: a plain-text connection is rejected before authentication.
    std::fs::write(
        data.join("pg_hba.conf"),
        "hostssl all all 127.0.0.1/32 trust clientcert=verify-ca\n\
         host all all 127.0.0.1/32 reject\n",
    )
    .unwrap();
    let mut postgres = Command::new(bin.join("postgres"));
    postgres
        .arg("-D")
        .arg(&data)
        .args(["-p", &port.to_string()])
        .args([
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            "unix_socket_directories=",
        ])
        .args([
            "-c",
            "ssl=on",
            "-c",
            "fsync=off",
            "-c",
            "max_connections=100",
        ])
        .arg("-c")
        .arg(format!(
            "ssl_cert_file={}",
            dir.join("server.crt").display()
        ))
        .arg("-c")
        .arg(format!("ssl_key_file={}", dir.join("server.key").display()))
        .arg("-c")
        .arg(format!("ssl_ca_file={}", dir.join("ca.crt").display()))
        .current_dir("/");
    as_user(&mut postgres, &user);
    // SIGINT: Postgres's fast shutdown.
    Server::spawn(name, dir, "-INT", &mut postgres)
}

/// Redis listening only on a TLS port, requiring client certificates of the test's CA.
pub fn start_redis(name: &'static str, pki: &Pki, port: u16) -> Server {
    let dir = fresh_dir(name);
    let path = |p: PathBuf| p.to_string_lossy().into_owned();
    let mut redis = Command::new("redis-server");
    redis
        .args([
            "--port",
            "0",
            "--tls-port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
        ])
        .args(["--tls-cert-file", &path(pki.file("server.crt"))])
        .args(["--tls-key-file", &path(pki.file("server.key"))])
        .args(["--tls-ca-cert-file", &path(pki.ca())])
        .args(["--tls-auth-clients", "yes"])
        .args([
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
            "--save",
            "",
        ])
        .args(["--dir", &path(dir.clone())]);
    Server::spawn(name, dir, "-TERM", &mut redis)
}

/// Where the broker's jars are: KAFKA_LIB (hack/.services.env) or the cache hack/services.sh fills.
fn kafka_lib() -> PathBuf {
    let lib = std::env::var_os("KAFKA_LIB")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/flashsale/kafka/lib"))
        })
        .expect("KAFKA_LIB or HOME");
    assert!(
        lib.join(".pom.sha256").is_file(),
        "no Kafka jars in {}: run `hack/services.sh up` (it fetches them) or set KAFKA_LIB",
        lib.display()
    );
    lib
}

/// The Kafka broker's ports: clients (SASL_SSL), the controller, and a plain-text listener the
/// broker itself and the test's readiness check use, never booking-app.
pub struct KafkaPorts {
    pub sasl_ssl: u16,
    pub controller: u16,
    pub internal: u16,
}

/// One KRaft broker+controller whose client listener is SASL_SSL with the test's server
/// certificate (PEM keystore), PLAIN and SCRAM-SHA-512 enabled: the PLAIN user from JAAS, the
/// SCRAM user written into the metadata when the storage is formatted.
pub fn start_kafka(name: &'static str, pki: &Pki, ports: &KafkaPorts) -> Server {
    let dir = fresh_dir(name);
    let lib = kafka_lib();
    let keystore = dir.join("server.pem");
    let pem = std::fs::read_to_string(pki.file("server.key")).unwrap()
        + &std::fs::read_to_string(pki.file("server.crt")).unwrap();
    std::fs::write(&keystore, pem).unwrap();
    let KafkaPorts {
        sasl_ssl,
        controller,
        internal,
    } = ports;
    let properties = dir.join("server.properties");
    std::fs::write(
        &properties,
        format!(
            "process.roles=broker,controller\n\
             node.id=1\n\
             controller.quorum.bootstrap.servers=127.0.0.1:{controller}\n\
             listeners=SASL_SSL://127.0.0.1:{sasl_ssl},CONTROLLER://127.0.0.1:{controller},INTERNAL://127.0.0.1:{internal}\n\
             advertised.listeners=SASL_SSL://localhost:{sasl_ssl},INTERNAL://127.0.0.1:{internal}\n\
             controller.listener.names=CONTROLLER\n\
             inter.broker.listener.name=INTERNAL\n\
             listener.security.protocol.map=SASL_SSL:SASL_SSL,CONTROLLER:PLAINTEXT,INTERNAL:PLAINTEXT\n\
             ssl.keystore.type=PEM\n\
             ssl.keystore.location={keystore}\n\
             sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-512\n\
             listener.name.sasl_ssl.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required user_{PLAIN_USER}=\"{PLAIN_PASSWORD}\";\n\
             listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;\n\
             log.dirs={data}\n\
             offsets.topic.replication.factor=1\n\
             offsets.topic.num.partitions=1\n\
             transaction.state.log.replication.factor=1\n\
             transaction.state.log.min.isr=1\n\
             transaction.state.log.num.partitions=1\n\
             share.coordinator.state.topic.replication.factor=1\n\
             share.coordinator.state.topic.min.isr=1\n\
             min.insync.replicas=1\n\
             default.replication.factor=1\n\
             group.initial.rebalance.delay.ms=0\n",
            keystore = keystore.display(),
            data = dir.join("data").display(),
        ),
    )
    .unwrap();
    let log4j = Path::new(env!("CARGO_MANIFEST_DIR")).join("../hack/services/kafka");
    let classpath = format!("{}/*", lib.display());
    run(
        "kafka storage format (needs java: hack/services.sh up installs it)",
        Command::new("java")
            .arg(format!(
                "-Dlog4j2.configurationFile={}",
                log4j.join("tools-log4j2.properties").display()
            ))
            .args([
                "-cp",
                &classpath,
                "kafka.tools.StorageTool",
                "format",
                "--standalone",
            ])
            .args(["-t", "Zmxhc2hzYWxlLXRscy10ZQ"])
            .arg("-c")
            .arg(&properties)
            .arg("--add-scram")
            .arg(format!(
                "SCRAM-SHA-512=[name={SCRAM_USER},password={SCRAM_PASSWORD}]"
            )),
    );
    let mut kafka = Command::new("java");
    kafka
        .args([
            "-Xmx256m",
            "-XX:+ExitOnOutOfMemoryError",
            "-Djava.awt.headless=true",
        ])
        .arg(format!(
            "-Dlog4j2.configurationFile={}",
            log4j.join("log4j2.properties").display()
        ))
        .args(["-cp", &classpath, "kafka.Kafka"])
        .arg(&properties);
    // A throwaway broker: no controlled shutdown to wait for.
    Server::spawn(name, dir, "-KILL", &mut kafka)
}
