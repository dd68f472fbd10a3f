//! Several `taskflow serve` processes sharing one PostgreSQL database and one NATS JetStream, as
//! in a deployment with more than one instance.
//!
//! [`Cluster::create`] makes a fresh database (on `TASKFLOW_TEST_POSTGRES_URL`, default the local
//! server) and a unique topic and stream prefix; [`Cluster::start`] starts an instance on a free
//! port with the cluster's settings, its output going to `taskflow.log` in its own folder.
//! Instances can be killed with SIGKILL, paused (SIGSTOP) and resumed (SIGCONT). Dropping the
//! cluster kills every instance, drops the database `WITH (FORCE)` and deletes the streams (with
//! every consumer group on them), also when the test failed; then the instances' folders are
//! kept and their logs named on standard error.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use taskflow_bus::TopicNames;
use taskflow_bus::backends::nats::{NatsBus, NatsSettings};

use crate::TEST_JWT_SECRET;

/// The PostgreSQL URL tests create and drop databases through: `TASKFLOW_TEST_POSTGRES_URL`,
/// else the local server's `postgres` database.
pub fn postgres_admin_url() -> String {
    std::env::var("TASKFLOW_TEST_POSTGRES_URL")
        .ok()
        .filter(|url| !url.is_empty())
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A fresh database and a prefix of its own on NATS, and the `taskflow` processes using them.
pub struct Cluster {
    binary: PathBuf,
    admin: String,
    database: String,
    prefix: String,
    root: PathBuf,
    instances: Vec<Instance>,
}

/// One `taskflow serve` process of a [`Cluster`].
pub struct Instance {
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    /// Its working folder, holding `taskflow.log`.
    pub dir: PathBuf,
    child: Option<Child>,
}

impl Instance {
    /// The process id while it runs (or is paused).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Everything it wrote to standard output and standard error so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Where its output goes.
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("taskflow.log")
    }

    fn signal(&self, signal: &str) {
        if let Some(pid) = self.pid() {
            let status = Command::new("kill")
                .args([signal, &pid.to_string()])
                .status()
                .expect("run kill");
            assert!(status.success(), "kill {signal} {pid} failed");
        }
    }
}

impl Cluster {
    /// Creates the database `taskflow_<name>_<uuid>` and the prefix `<name>-<uuid>-` for
    /// instances of `binary` (the `taskflow` binary under test); panics when PostgreSQL cannot
    /// be reached.
    pub fn create(binary: &str, name: &str) -> Self {
        let unique = uuid::Uuid::now_v7().simple().to_string();
        let cluster = Self {
            binary: PathBuf::from(binary),
            admin: postgres_admin_url(),
            database: format!("taskflow_{name}_{unique}"),
            prefix: format!("{name}-{unique}-"),
            root: std::env::temp_dir().join(format!("taskflow-{name}-{unique}")),
            instances: Vec::new(),
        };
        std::fs::create_dir_all(&cluster.root).expect("create the cluster folder");
        let status = Command::new("psql")
            .args([
                cluster.admin.as_str(),
                "-qc",
                &format!("CREATE DATABASE {}", cluster.database),
            ])
            .status()
            .expect("run psql");
        assert!(
            status.success(),
            "cannot create a database (is PostgreSQL running on 127.0.0.1:5432?)"
        );
        cluster
    }

    /// The URL of the cluster's database.
    pub fn database_url(&self) -> String {
        let server = self
            .admin
            .rsplit_once('/')
            .map_or(self.admin.as_str(), |(server, _)| server);
        format!("{server}/{}", self.database)
    }

    /// The physical name of logical `topic` (the cluster's topic prefix in front).
    pub fn physical_topic(&self, topic: &str) -> String {
        format!("{}{topic}", self.prefix)
    }

    /// The NATS settings every instance gets (the streams are `<stream_prefix>_<physical topic>`).
    pub fn nats_settings(&self) -> NatsSettings {
        NatsSettings {
            stream_prefix: self.prefix.trim_end_matches('-').replace('-', "_"),
            ..NatsSettings::default()
        }
    }

    /// The settings (as environment variables) shared by every instance and command: the
    /// database, the NATS bus with the cluster's prefixes, one JWT secret, rate limits off.
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("TASKFLOW_DATABASE__URL", self.database_url()),
            ("TASKFLOW_BUS__BACKEND", "nats".into()),
            ("TASKFLOW_BUS__TOPICS__PREFIX", self.prefix.clone()),
            (
                "TASKFLOW_BUS__NATS__STREAM_PREFIX",
                self.nats_settings().stream_prefix,
            ),
            ("TASKFLOW_AUTH__JWT_SECRET", TEST_JWT_SECRET.into()),
            ("TASKFLOW_RATE_LIMIT__ENABLED", "false".into()),
            ("NO_COLOR", "1".into()),
        ]
        .into_iter()
        .map(|(key, value)| (key.to_owned(), value))
        .collect()
    }

    /// The binary with `args` and the cluster's settings, without the caller's `TASKFLOW_*`
    /// variables and `RUST_LOG`, run in the cluster's folder.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(&self.binary);
        for (key, _) in std::env::vars() {
            if key.starts_with("TASKFLOW_") || key == "RUST_LOG" {
                command.env_remove(key);
            }
        }
        command.current_dir(&self.root).args(args).envs(self.env());
        command
    }

    /// Starts `taskflow serve` on a free port with the cluster's settings and `env` on top, and
    /// waits until it accepts connections.
    pub fn start(&mut self, env: &[(&str, &str)]) -> &Instance {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("find a free port")
            .port();
        let dir = self.root.join(format!("instance-{}", self.instances.len()));
        std::fs::create_dir_all(&dir).expect("create the instance folder");
        let log = std::fs::File::create(dir.join("taskflow.log")).expect("create the log");
        let mut child = self
            .command(&["serve", "--listen", &format!("127.0.0.1:{port}")])
            .current_dir(&dir)
            .envs(env.iter().copied())
            .stdout(log.try_clone().expect("share the log"))
            .stderr(log)
            .spawn()
            .expect("start the taskflow binary");
        let hint = format!(
            "see {} (are nats-server on 4222 and PostgreSQL on 5432 running?)",
            dir.join("taskflow.log").display()
        );
        crate::wait_until_listening(&mut child, port, &hint);
        self.instances.push(Instance {
            url: format!("http://127.0.0.1:{port}"),
            dir,
            child: Some(child),
        });
        self.instances.last().expect("just pushed")
    }

    /// Every instance started, in order (killed ones included).
    pub fn instances(&self) -> &[Instance] {
        &self.instances
    }

    /// Kills instance `index` with SIGKILL (no chance to clean up) and reaps it.
    pub fn kill9(&mut self, index: usize) {
        if let Some(mut child) = self.instances[index].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops instance `index` with SIGSTOP: it holds its connections but runs nothing.
    pub fn pause(&self, index: usize) {
        self.instances[index].signal("-STOP");
    }

    /// Lets a paused instance run again (SIGCONT).
    pub fn resume(&self, index: usize) {
        self.instances[index].signal("-CONT");
    }

    /// A connection to the cluster's NATS server with its stream prefix.
    pub async fn nats(&self) -> NatsBus {
        NatsBus::connect(&self.nats_settings())
            .await
            .expect("connect to NATS (is nats-server running on 4222?)")
    }
}

/// Deletes every stream of topics with `prefix` (and the consumer groups on them).
async fn delete_streams(settings: NatsSettings, prefix: String) {
    let Ok(bus) = NatsBus::connect(&settings).await else {
        return;
    };
    let names = TopicNames {
        prefix,
        ..TopicNames::default()
    };
    let _ = bus.delete_topics(&names).await;
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for instance in &mut self.instances {
            if let Some(mut child) = instance.child.take() {
                // SIGKILL works on paused processes too.
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        let _ = Command::new("psql")
            .args([
                self.admin.as_str(),
                "-qc",
                &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.database),
            ])
            .stdout(Stdio::null())
            .status();
        let (settings, prefix) = (self.nats_settings(), self.prefix.clone());
        // Drop may run inside a runtime: clean up on a thread of its own.
        let cleanup = std::thread::spawn(move || {
            if let Ok(runtime) = tokio::runtime::Runtime::new() {
                runtime.block_on(delete_streams(settings, prefix));
            }
        });
        let _ = cleanup.join();
        if std::thread::panicking() {
            for instance in &self.instances {
                eprintln!(
                    "kept the log of {}: {}",
                    instance.url,
                    instance.log_path().display()
                );
            }
        } else {
            let _ = std::fs::remove_dir_all(&self.root);
        }
    }
}
