//! A throwaway PostgreSQL server per test: a real `postgres` in a temporary
//! directory, listening on `127.0.0.1` on a free port, with a database `byok`.
//!
//! * Binaries: `$BYOK_PG_LIB_ROOT/*/bin` (default `/usr/lib/postgresql`,
//!   Debian's layout; the highest version wins), else `initdb` on `PATH`
//!   (symlinks followed, so `pg_ctl` is taken from beside the real `initdb`).
//!   `scripts/ensure-postgres` installs them when missing.
//! * PostgreSQL refuses to run as root: when the tests run as root, `initdb`,
//!   `pg_ctl` and so `postgres` run as the `postgres` system user (else
//!   `nobody`) through `setpriv` (else `runuser`, else `su`), and the
//!   temporary directory is chowned to that user. Otherwise they run as the
//!   current user.
//! * Authentication is `trust` for the superuser `postgres`: no password. The
//!   server listens on 127.0.0.1 only and lives as long as the test.
//! * Durability is off (`fsync`, `synchronous_commit`, `full_page_writes`):
//!   a crash of the machine loses the cluster, which is thrown away anyway.
//! * Readiness is `pg_ctl -w` (the postmaster says it accepts connections)
//!   and then a real connection; no sleeps.
//! * Dropping a cluster kills its server and removes its directory. A test
//!   process killed outright (SIGKILL, Ctrl-C) cannot do that: the next test
//!   process to start a cluster kills and removes the clusters whose owning
//!   process is gone ([`sweep_orphans`], Linux only).

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::fmt::Write as _;
use std::fs;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::{chown, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

/// The database every cluster gets, besides `postgres`.
const DATABASE: &str = "byok";
/// The superuser `initdb` creates; `trust` auth, no password.
const SUPERUSER: &str = "postgres";
/// How many free ports to try before giving up on `start`.
const PORT_ATTEMPTS: usize = 20;
/// `pg_ctl -t`: the longest `pg_ctl` waits for a start or a stop, in seconds.
const PG_CTL_TIMEOUT_SECS: &str = "60";
/// The longest a start polls for a TCP connection once `pg_ctl` said ready.
const CONNECT_DEADLINE: Duration = Duration::from_secs(30);
/// The name of every cluster's temporary directory starts with this.
const DIR_PREFIX: &str = "byok-pg-";
/// In every cluster's directory: the pid of the test process that owns it,
/// for [`sweep_orphans`].
const OWNER_FILE: &str = "owner.pid";
/// The longest unix socket directory (the socket's full path must fit in
/// `sun_path`, 108 bytes, with `/.s.PGSQL.65535`); longer gets no socket.
const MAX_SOCKET_DIR_LEN: usize = 90;

/// Ports of the clusters of this process that are alive, stopped ones
/// included: a stopped cluster's port looks free, and handing it to another
/// cluster would let that one answer in the stopped one's place.
static RESERVED_PORTS: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());

/// A PostgreSQL server of its own, in a temporary directory; dropping it
/// kills the server and removes the directory.
#[derive(Debug)]
pub(crate) struct PgCluster {
    /// Holds `data/` (the cluster), `postgres.log` and the unix socket.
    dir: tempfile::TempDir,
    /// 127.0.0.1's port the server listens on, 0 until the first start.
    port: u16,
    /// How to run the server binaries; the same for the whole process.
    host: &'static Host,
}

impl PgCluster {
    /// `initdb` into a fresh temporary directory (owned by the unprivileged
    /// user when root), starts `postgres` on 127.0.0.1 on a free port, waits
    /// until it accepts connections and creates the database `byok`.
    ///
    /// Panics with a clear message, including the server's log, if anything
    /// fails. Blocks the calling thread for a second or so: callable from a
    /// `#[tokio::test]`, although it does not yield.
    pub(crate) fn start() -> PgCluster {
        let host = host();
        let dir = host.temp_dir();
        let mut cluster = PgCluster { dir, port: 0, host };
        cluster.init();
        cluster.start_on_free_port();
        cluster.create_database();
        cluster
    }

    /// Like [`PgCluster::start`], with TLS on (`ssl = on`): the server shows
    /// tests/fixtures' certificate for 127.0.0.1, signed by
    /// tests/fixtures/ca.pem. Clients may still connect without TLS.
    pub(crate) fn start_with_tls() -> PgCluster {
        let host = host();
        let dir = host.temp_dir();
        let mut cluster = PgCluster { dir, port: 0, host };
        cluster.init();
        cluster.enable_tls();
        cluster.start_on_free_port();
        cluster.create_database();
        cluster
    }

    /// `postgres://postgres@127.0.0.1:<port>/byok`: superuser, no password
    /// (`trust`), over TCP.
    pub(crate) fn url(&self) -> String {
        self.url_for(DATABASE)
    }

    /// The port on 127.0.0.1 the server listens on (also while stopped: a
    /// restart reuses it).
    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    /// Stops the server (`pg_ctl -m fast`: open connections are closed) and
    /// waits until it is down; the data stay. Simulates a database outage:
    /// until [`PgCluster::restart`], connecting to [`PgCluster::url`] is
    /// refused.
    pub(crate) fn stop(&self) {
        let output = self.pg_ctl(&["-m", "fast", "stop"]);
        if !output.status.success() {
            self.fail("pg_ctl stop failed", Some(&output));
        }
    }

    /// Starts the server again, on the same port and data, after
    /// [`PgCluster::stop`]; waits until it accepts connections.
    pub(crate) fn restart(&self) {
        let output = self.pg_ctl_start();
        if !output.status.success() {
            self.fail(
                &format!(
                    "pg_ctl start (restart on port {}) failed; if the log says the \
                     address is in use, another process took the port during the outage",
                    self.port
                ),
                Some(&output),
            );
        }
        self.wait_for_tcp();
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log_file(&self) -> PathBuf {
        self.dir.path().join("postgres.log")
    }

    fn url_for(&self, database: &str) -> String {
        format!(
            "postgres://{SUPERUSER}@127.0.0.1:{port}/{database}",
            port = self.port
        )
    }

    /// `initdb`, then the settings every start shares, appended to
    /// `postgresql.conf` (no shell quoting of paths on `pg_ctl -o`).
    fn init(&self) {
        let mut initdb = self.host.command("initdb", self.dir.path());
        initdb
            .arg("-D")
            .arg(self.data_dir())
            .args(["-U", SUPERUSER, "--auth=trust", "--no-sync"])
            .args(["--encoding=UTF8", "--locale=C"]);
        let output = run(&mut initdb);
        if !output.status.success() {
            self.fail("initdb failed", Some(&output));
        }

        let socket_dir = self.dir.path().to_string_lossy().into_owned();
        let socket_dir = if socket_dir.len() <= MAX_SOCKET_DIR_LEN && !socket_dir.contains('\'') {
            socket_dir
        } else {
            // TCP only; pg_ctl -w does not need the socket.
            String::new()
        };
        let settings = format!(
            "\n# byok-proxy tests (tests/stores/pg.rs)\n\
             listen_addresses = '127.0.0.1'\n\
             unix_socket_directories = '{socket_dir}'\n\
             fsync = off\n\
             synchronous_commit = off\n\
             full_page_writes = off\n\
             shared_buffers = 16MB\n"
        );
        let conf = self.data_dir().join("postgresql.conf");
        let appended = fs::read_to_string(&conf)
            .map(|mut text| {
                text.push_str(&settings);
                text
            })
            .and_then(|text| fs::write(&conf, text));
        if let Err(error) = appended {
            self.fail(
                &format!("cannot append to {}: {error}", conf.display()),
                None,
            );
        }
    }

    /// Puts the fixtures' certificate and key in the data directory (owned
    /// by the server's user, the key 0600 as the server demands) and turns
    /// `ssl` on.
    fn enable_tls(&self) {
        let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
        for (from, to) in [
            ("upstream.pem", "server.crt"),
            ("upstream.key", "server.key"),
        ] {
            let dest = self.data_dir().join(to);
            let placed = fs::copy(format!("{fixtures}/{from}"), &dest)
                .and_then(|_| fs::set_permissions(&dest, fs::Permissions::from_mode(0o600)))
                .and_then(|()| match &self.host.run_as {
                    Some(run_as) => chown(&dest, Some(run_as.uid), Some(run_as.gid)),
                    None => Ok(()),
                });
            if let Err(error) = placed {
                self.fail(&format!("cannot place {}: {error}", dest.display()), None);
            }
        }
        let conf = self.data_dir().join("postgresql.conf");
        let appended = fs::read_to_string(&conf)
            .map(|text| {
                format!(
                    "{text}\nssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n"
                )
            })
            .and_then(|text| fs::write(&conf, text));
        if let Err(error) = appended {
            self.fail(
                &format!("cannot enable ssl in {}: {error}", conf.display()),
                None,
            );
        }
    }

    /// Starts on a free port, trying another when the chosen one was taken
    /// between choosing and binding.
    fn start_on_free_port(&mut self) {
        for _ in 0..PORT_ATTEMPTS {
            let port = reserve_free_port();
            self.port = port;
            let log_before = fs::metadata(self.log_file()).map_or(0, |m| m.len());
            let output = self.pg_ctl_start();
            if output.status.success() {
                self.wait_for_tcp();
                return;
            }
            let log = read_lossy(&self.log_file());
            let new_log = log
                .get(usize::try_from(log_before).unwrap_or(0)..)
                .unwrap_or("");
            let port_taken = [
                "Address already in use",
                "could not bind",
                "could not create any TCP/IP sockets",
            ]
            .iter()
            .any(|needle| new_log.contains(needle));
            if !port_taken {
                // `self.port` stays reserved until drop.
                self.fail("pg_ctl start failed", Some(&output));
            }
            release_port(port);
            self.port = 0;
        }
        self.fail(
            &format!("pg_ctl start failed {PORT_ATTEMPTS} times: every chosen port was taken"),
            None,
        );
    }

    fn pg_ctl_start(&self) -> Output {
        let options = format!("-p {}", self.port);
        let log = self.log_file();
        self.pg_ctl(&[
            OsStr::new("-o"),
            OsStr::new(&options),
            OsStr::new("-l"),
            log.as_os_str(),
            OsStr::new("start"),
        ])
    }

    /// `pg_ctl -D <data> -w -t <timeout> <args>`.
    fn pg_ctl<S: AsRef<OsStr>>(&self, args: &[S]) -> Output {
        let mut pg_ctl = self.host.command("pg_ctl", self.dir.path());
        pg_ctl
            .arg("-D")
            .arg(self.data_dir())
            .args(["-w", "-t", PG_CTL_TIMEOUT_SECS])
            .args(args);
        run(&mut pg_ctl)
    }

    /// `pg_ctl -w` already waited for the postmaster to report it accepts
    /// connections; this makes sure it does so on 127.0.0.1:port (bounded).
    fn wait_for_tcp(&self) {
        let address = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        let deadline = Instant::now() + CONNECT_DEADLINE;
        loop {
            match TcpStream::connect_timeout(&address, Duration::from_secs(1)) {
                Ok(_) => return,
                Err(error) if Instant::now() >= deadline => {
                    self.fail(
                        &format!("postgres does not accept TCP on {address}: {error}"),
                        None,
                    );
                }
                // A bounded poll on a condition, not a wait for time to pass.
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
    }

    /// `CREATE DATABASE byok` through a real client connection, on a thread
    /// of its own so that `start` works inside a tokio runtime too.
    fn create_database(&self) {
        let url = self.url_for("postgres");
        let created = std::thread::spawn(move || -> Result<(), String> {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|error| format!("tokio runtime: {error}"))?;
            runtime.block_on(async {
                let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                    .await
                    .map_err(|error| format!("connect to {url}: {error}"))?;
                let driver = tokio::spawn(connection);
                let result = client
                    .batch_execute(&format!("CREATE DATABASE {DATABASE}"))
                    .await
                    .map_err(|error| format!("CREATE DATABASE {DATABASE}: {error}"));
                drop(client);
                let _ = driver.await;
                result
            })
        })
        .join()
        .unwrap_or_else(|_| Err("the thread creating the database panicked".to_owned()));
        if let Err(error) = created {
            self.fail(&error, None);
        }
    }

    /// Panics with `what`, the command's output and the server's log.
    fn fail(&self, what: &str, output: Option<&Output>) -> ! {
        let mut message = format!(
            "PgCluster in {} (port {}): {what}",
            self.dir.path().display(),
            self.port
        );
        if let Some(output) = output {
            let _ = write!(
                message,
                "\n--- command: {}\n--- stdout:\n{}\n--- stderr:\n{}",
                output.status,
                String::from_utf8_lossy(&output.stdout).trim_end(),
                String::from_utf8_lossy(&output.stderr).trim_end(),
            );
        }
        let log = read_lossy(&self.log_file());
        let tail_start = log
            .char_indices()
            .rev()
            .nth(8 * 1024)
            .map_or(0, |(index, _)| index);
        let _ = write!(
            message,
            "\n--- {} (last 8 KiB):\n{}",
            self.log_file().display(),
            log[tail_start..].trim_end()
        );
        panic!("{message}");
    }
}

impl Drop for PgCluster {
    /// Kills the server (`pg_ctl -m immediate`, harmless when it is not
    /// running) and removes the directory. Never panics.
    fn drop(&mut self) {
        if self.data_dir().join("postmaster.pid").exists() {
            let _ = self.pg_ctl(&["-m", "immediate", "stop"]);
        }
        if self.port != 0 {
            release_port(self.port);
        }
        // `self.dir` removes the directory when dropped, next.
    }
}

/// Where the server binaries are and whom they run as.
#[derive(Debug)]
struct Host {
    /// Holds `initdb` and `pg_ctl` (which finds `postgres` beside itself).
    bin_dir: PathBuf,
    /// Where the clusters' temporary directories go.
    temp_base: PathBuf,
    /// `Some` when this process is root.
    run_as: Option<RunAs>,
}

/// The unprivileged user the server runs as when the tests run as root.
#[derive(Debug)]
struct RunAs {
    user: String,
    uid: u32,
    gid: u32,
    tool: SwitchUser,
}

/// The command that runs a program as [`RunAs::user`].
#[derive(Debug)]
enum SwitchUser {
    /// `setpriv --reuid --regid --init-groups -- program args…`.
    Setpriv(PathBuf),
    /// `runuser -u user -- program args…`.
    Runuser(PathBuf),
    /// `su -s /bin/sh -c 'exec "$0" "$@"' -- user program args…`.
    Su(PathBuf),
}

/// The process-wide [`Host`], found once (which also sweeps orphans once).
fn host() -> &'static Host {
    static HOST: OnceLock<Host> = OnceLock::new();
    HOST.get_or_init(|| {
        let run_as = is_root().then(find_run_as);
        let temp_base = std::env::temp_dir();
        // When root, the unprivileged user must be able to reach the
        // directory: $TMPDIR may be under one only root may enter.
        let temp_base = if run_as.is_none() || traversable_by_others(&temp_base) {
            temp_base
        } else {
            PathBuf::from("/tmp")
        };
        let host = Host {
            bin_dir: find_bin_dir(),
            temp_base,
            run_as,
        };
        sweep_orphans(&host);
        host
    })
}

impl Host {
    /// A fresh temporary directory the server's user may use, with the
    /// [`OWNER_FILE`].
    fn temp_dir(&self) -> tempfile::TempDir {
        let dir = tempfile::Builder::new()
            .prefix(DIR_PREFIX)
            .tempdir_in(&self.temp_base)
            .unwrap_or_else(|error| {
                panic!(
                    "PgCluster: cannot create a temporary directory in {}: {error}",
                    self.temp_base.display()
                )
            });
        if let Err(error) = fs::write(dir.path().join(OWNER_FILE), std::process::id().to_string()) {
            panic!(
                "PgCluster: cannot write in {}: {error}",
                dir.path().display()
            );
        }
        if let Some(run_as) = &self.run_as {
            if let Err(error) = chown(dir.path(), Some(run_as.uid), Some(run_as.gid)) {
                panic!(
                    "PgCluster: cannot chown {} to {}: {error}",
                    dir.path().display(),
                    run_as.user
                );
            }
        }
        dir
    }

    /// `program` (from [`Host::bin_dir`]) as the server's user, in `cwd`,
    /// with no `PG*` variables from the environment.
    fn command(&self, program: &str, cwd: &Path) -> Command {
        let program = self.bin_dir.join(program);
        let mut command = match &self.run_as {
            None => Command::new(&program),
            Some(run_as) => {
                let mut command;
                match &run_as.tool {
                    SwitchUser::Setpriv(setpriv) => {
                        command = Command::new(setpriv);
                        command
                            .arg(format!("--reuid={}", run_as.uid))
                            .arg(format!("--regid={}", run_as.gid))
                            .args(["--init-groups", "--"]);
                    }
                    SwitchUser::Runuser(runuser) => {
                        command = Command::new(runuser);
                        command.args(["-u", &run_as.user, "--"]);
                    }
                    SwitchUser::Su(su) => {
                        command = Command::new(su);
                        command
                            .args(["-s", "/bin/sh", "-c", "exec \"$0\" \"$@\"", "--"])
                            .arg(&run_as.user);
                    }
                }
                command.arg(&program);
                command
            }
        };
        command.current_dir(cwd).env("LC_ALL", "C");
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("PG") {
                command.env_remove(name);
            }
        }
        command
    }
}

/// Runs `command` to completion; panics if it cannot be started at all.
fn run(command: &mut Command) -> Output {
    command
        .output()
        .unwrap_or_else(|error| panic!("PgCluster: cannot run {command:?}: {error}"))
}

/// `$BYOK_PG_LIB_ROOT/<highest version>/bin` (default `/usr/lib/postgresql`),
/// else the directory of the real `initdb` on `PATH`; the same search as
/// `scripts/ensure-postgres`.
fn find_bin_dir() -> PathBuf {
    let lib_root = std::env::var_os("BYOK_PG_LIB_ROOT")
        .map_or_else(|| PathBuf::from("/usr/lib/postgresql"), PathBuf::from);
    let mut versions: Vec<(Vec<u32>, PathBuf)> = fs::read_dir(&lib_root)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let bin = entry.path().join("bin");
            let version = entry
                .file_name()
                .to_str()?
                .split('.')
                .map(str::parse)
                .collect::<Result<Vec<u32>, _>>()
                .ok()?;
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    versions.sort();
    let found = versions.pop().map(|(_, bin)| bin).or_else(|| {
        let path = std::env::var_os("PATH")?;
        let initdb = std::env::split_paths(&path)
            .map(|dir| dir.join("initdb"))
            .find(|candidate| candidate.is_file())?;
        let real = fs::canonicalize(&initdb).ok()?;
        Some(real.parent()?.to_path_buf())
    });
    let Some(bin_dir) = found else {
        panic!(
            "PgCluster: no PostgreSQL server: no initdb in {}/*/bin nor on PATH; \
             run scripts/ensure-postgres (it installs Debian's postgresql package)",
            lib_root.display()
        );
    };
    if !bin_dir.join("pg_ctl").is_file() {
        panic!("PgCluster: {} has initdb but no pg_ctl", bin_dir.display());
    }
    bin_dir
}

/// Whether this process runs as root (`id -u`).
fn is_root() -> bool {
    let output = run(Command::new("id").arg("-u"));
    String::from_utf8_lossy(&output.stdout).trim() == "0"
}

/// `postgres` (else `nobody`) and the first of `setpriv`, `runuser`, `su`.
fn find_run_as() -> RunAs {
    let id = |flag: &str, user: &str| -> Option<u32> {
        let output = Command::new("id").args([flag, user]).output().ok()?;
        if !output.status.success() {
            return None;
        }
        String::from_utf8_lossy(&output.stdout).trim().parse().ok()
    };
    let Some((user, uid, gid)) = ["postgres", "nobody"]
        .into_iter()
        .find_map(|user| Some((user.to_owned(), id("-u", user)?, id("-g", user)?)))
    else {
        panic!(
            "PgCluster: running as root, and neither a `postgres` nor a `nobody` user \
             exists to run PostgreSQL as"
        );
    };
    let on_path = |name: &str| -> Option<PathBuf> {
        let path = std::env::var_os("PATH").unwrap_or_default();
        std::env::split_paths(&path)
            .chain(["/usr/sbin", "/usr/bin", "/sbin", "/bin"].map(PathBuf::from))
            .map(|dir| dir.join(name))
            .find(|candidate| candidate.is_file())
    };
    let tool = on_path("setpriv")
        .map(SwitchUser::Setpriv)
        .or_else(|| on_path("runuser").map(SwitchUser::Runuser))
        .or_else(|| on_path("su").map(SwitchUser::Su))
        .unwrap_or_else(|| {
            panic!(
                "PgCluster: running as root, and none of setpriv, runuser, su exists \
                 to run PostgreSQL as {user}"
            )
        });
    RunAs {
        user,
        uid,
        gid,
        tool,
    }
}

/// Kills the servers and removes the directories of clusters whose test
/// process died without dropping them (its pid in [`OWNER_FILE`] is gone
/// from `/proc`). Best effort; Linux only; skips whatever it cannot read.
/// A directory without an owner file (still being created) is left alone.
fn sweep_orphans(host: &Host) {
    if !Path::new("/proc/self").exists() {
        return;
    }
    let Ok(entries) = fs::read_dir(&host.temp_base) else {
        return;
    };
    for entry in entries.flatten() {
        if !entry.file_name().to_string_lossy().starts_with(DIR_PREFIX) {
            continue;
        }
        let dir = entry.path();
        let Ok(owner) = fs::read_to_string(dir.join(OWNER_FILE)) else {
            continue;
        };
        let owner = owner.trim();
        let is_pid = !owner.is_empty() && owner.bytes().all(|byte| byte.is_ascii_digit());
        if !is_pid || Path::new("/proc").join(owner).exists() {
            continue;
        }
        let data = dir.join("data");
        if data.join("postmaster.pid").exists() {
            let _ = host
                .command("pg_ctl", &dir)
                .arg("-D")
                .arg(&data)
                .args(["-w", "-t", PG_CTL_TIMEOUT_SECS, "-m", "immediate", "stop"])
                .output();
        }
        let _ = fs::remove_dir_all(&dir);
    }
}

/// Whether every directory from `/` down to `dir` lets other users through.
fn traversable_by_others(dir: &Path) -> bool {
    dir.ancestors().all(|ancestor| {
        fs::metadata(ancestor).is_ok_and(|meta| meta.permissions().mode() & 0o001 != 0)
    })
}

/// A port on 127.0.0.1 that was free a moment ago and that no cluster of
/// this process holds; reserved until [`release_port`].
fn reserve_free_port() -> u16 {
    let mut reserved = RESERVED_PORTS
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    for _ in 0..100 {
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|listener| listener.local_addr())
            .map(|address| address.port())
            .unwrap_or_else(|error| panic!("PgCluster: cannot bind 127.0.0.1:0: {error}"));
        if reserved.insert(port) {
            return port;
        }
    }
    panic!("PgCluster: the kernel keeps handing out ports this process already uses");
}

fn release_port(port: u16) {
    RESERVED_PORTS
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .remove(&port);
}

/// The file as text, lossily; empty when unreadable.
fn read_lossy(path: &Path) -> String {
    fs::read(path)
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
        .unwrap_or_default()
}
