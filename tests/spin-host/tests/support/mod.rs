//! Test support: builds the guest fixtures, starts `kefu-spin-host` as a real process and
//! stops it again (when dropped, so also when a test fails), and serves a tiny upstream for
//! outbound HTTP.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, mpsc};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// The Kefu workspace root.
pub fn workspace_root() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    root.canonicalize().unwrap_or(root)
}

/// Builds the fixture components once per test run and returns the directory holding
/// `spin_host_probe.wasm` and `spin_host_uses_mqtt.wasm`.
pub fn fixtures() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        let root = workspace_root();
        let target_dir = root.join("target/spin-host-fixtures");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let status = Command::new(cargo)
            .current_dir(&root)
            .args([
                "build",
                "--locked",
                "--release",
                "--target",
                "wasm32-wasip2",
            ])
            .arg("--manifest-path")
            .arg(root.join("tests/spin-host/fixtures/Cargo.toml"))
            .arg("--target-dir")
            .arg(&target_dir)
            // Settings of the outer `cargo test` must not leak into the wasm build.
            .env_remove("CARGO_TARGET_DIR")
            .env_remove("CARGO_BUILD_TARGET")
            .env_remove("RUSTFLAGS")
            .env_remove("CARGO_ENCODED_RUSTFLAGS")
            .status()
            .expect("running cargo to build the fixture components");
        assert!(
            status.success(),
            "building tests/spin-host/fixtures for wasm32-wasip2 failed ({status}); \
             is the target installed? `rustup target add wasm32-wasip2`"
        );
        target_dir.join("wasm32-wasip2/release")
    })
}

/// The probe component.
pub fn probe_wasm() -> PathBuf {
    fixtures().join("spin_host_probe.wasm")
}

/// A component importing `fermyon:spin/mqtt@2.0.0`, which the host does not provide.
pub fn mqtt_wasm() -> PathBuf {
    fixtures().join("spin_host_uses_mqtt.wasm")
}

/// An application directory: a `spin.toml` and a state directory, removed on drop.
pub struct App {
    dir: tempfile::TempDir,
}

impl App {
    /// Writes `manifest` as the app's `spin.toml`.
    pub fn new(manifest: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("kefu-spin-host-")
            .tempdir()
            .expect("creating a temp dir");
        std::fs::write(dir.path().join("spin.toml"), manifest).expect("writing spin.toml");
        Self { dir }
    }

    /// The manifest's path.
    pub fn manifest(&self) -> PathBuf {
        self.dir.path().join("spin.toml")
    }

    /// The state directory to give the host.
    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// A command starting the host on a free port for this app, with no `SPIN_VARIABLE_*`
    /// inherited from the test's environment.
    pub fn command(&self) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_kefu-spin-host"));
        command
            .arg("--from")
            .arg(self.manifest())
            .arg("--state-dir")
            .arg(self.state_dir())
            .args(["--listen", "127.0.0.1:0"]);
        for (key, _) in std::env::vars() {
            if key.starts_with("SPIN_VARIABLE_") {
                command.env_remove(key);
            }
        }
        command
    }
}

/// A running host process. Dropping it stops the process (SIGTERM, then SIGKILL).
pub struct Host {
    child: Option<Child>,
    base_url: String,
    log_path: PathBuf,
}

/// The real Spin CLI, where one is found (`SPIN`, `spin` on `PATH`, `../shared/bin/spin`
/// beside the workspace), so a test can hold this host to what Spin itself does.
pub fn real_spin() -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let executable = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if let Some(path) = std::env::var_os("SPIN").filter(|v| !v.is_empty()) {
        let path = PathBuf::from(path);
        assert!(
            executable(&path),
            "SPIN={} is not executable",
            path.display()
        );
        return Some(path);
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|dir| dir.join("spin"))
        .chain([workspace_root().join("../shared/bin/spin")])
        .find(|p| executable(p))
}

/// A command running `app` on real Spin (`spin up`) on a free port, with its state in the
/// app's state directory and no `SPIN_VARIABLE_*` inherited.
pub fn spin_up(spin: &Path, app: &App) -> Command {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let mut command = Command::new(spin);
    command
        .arg("up")
        .arg("--from")
        .arg(app.manifest())
        .arg("--state-dir")
        .arg(app.state_dir())
        .args(["--listen", &format!("127.0.0.1:{port}")]);
    for (key, _) in std::env::vars() {
        if key.starts_with("SPIN_VARIABLE_") {
            command.env_remove(key);
        }
    }
    command
}

impl Host {
    /// Starts `command` and waits for its `ready http://…` line (real Spin's `Serving
    /// http://…`).
    pub fn start(mut command: Command, label: &str) -> anyhow::Result<Self> {
        use std::os::unix::process::CommandExt;
        // Its own process group: `spin up` may run its trigger as a child process.
        command.process_group(0);
        let log_dir = workspace_root().join("target/spin-host-tests");
        std::fs::create_dir_all(&log_dir)?;
        let log_path = log_dir.join(format!("{label}.log"));
        let log = std::fs::File::create(&log_path)?;
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log.try_clone()?)
            .spawn()
            .context("starting kefu-spin-host")?;
        let stdout = child.stdout.take().context("no stdout pipe")?;
        let (ready_tx, ready_rx) = mpsc::channel();
        // Reads the ready line, then copies whatever the guest prints into the log so the
        // pipe never fills up.
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let mut log = log;
            let mut sent = false;
            while let Some(Ok(line)) = lines.next() {
                let url = line
                    .strip_prefix("ready ")
                    .or_else(|| line.strip_prefix("Serving "));
                if !sent && let Some(url) = url {
                    let _ = ready_tx.send(url.to_owned());
                    sent = true;
                    continue;
                }
                let _ = writeln!(log, "[stdout] {line}");
            }
        });
        let mut host = Self {
            child: Some(child),
            base_url: String::new(),
            log_path,
        };
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            match ready_rx.recv_timeout(Duration::from_millis(100)) {
                Ok(url) => {
                    host.base_url = url;
                    return Ok(host);
                }
                Err(mpsc::RecvTimeoutError::Timeout) if Instant::now() < deadline => {
                    if let Some(status) = host
                        .child
                        .as_mut()
                        .and_then(|c| c.try_wait().ok().flatten())
                    {
                        bail!(
                            "kefu-spin-host exited before it was ready ({status}):\n{}",
                            host.log()
                        );
                    }
                }
                Err(_) => bail!("kefu-spin-host printed no ready line:\n{}", host.log()),
            }
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    /// Everything the host wrote to stderr (and the guest to stdout) so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Sends SIGTERM and waits for the process to exit.
    pub fn stop(mut self) -> ExitStatus {
        self.terminate()
            .expect("the host did not stop within 10 s of SIGTERM")
    }

    fn terminate(&mut self) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        // `kill` rather than libc: the workspace forbids unsafe code.
        let _ = Command::new("kill")
            .args(["-TERM", "--", &format!("-{}", child.id())])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", child.id())])
            .status();
        let _ = child.wait();
        None
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        self.terminate();
    }
}

/// Runs the host to completion and returns its exit status and stderr: for startups that
/// must fail.
pub fn run_to_exit(mut command: Command) -> (ExitStatus, String, String) {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting kefu-spin-host");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            let mut stdout = String::new();
            let mut stderr = String::new();
            child
                .stdout
                .take()
                .map(|mut s| s.read_to_string(&mut stdout));
            child
                .stderr
                .take()
                .map(|mut s| s.read_to_string(&mut stderr));
            return (status, stdout, stderr);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("kefu-spin-host neither failed nor exited within 120 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A loopback HTTP server answering every request with `200 upstream:<path>`, counting
/// the connections it accepted. It lives as long as the test process (a detached thread
/// blocked in `accept`).
pub struct Upstream {
    /// Its port on 127.0.0.1.
    pub port: u16,
    connections: Arc<AtomicUsize>,
}

impl Upstream {
    /// Starts the server.
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding the upstream");
        let port = listener.local_addr().expect("upstream address").port();
        let connections = Arc::new(AtomicUsize::new(0));
        let counter = connections.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                counter.fetch_add(1, Ordering::SeqCst);
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
                    let mut request_line = String::new();
                    let _ = reader.read_line(&mut request_line);
                    // Skip the headers (GET requests, no body).
                    let mut line = String::new();
                    while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                        line.clear();
                    }
                    let path = request_line.split_whitespace().nth(1).unwrap_or("?");
                    let body = format!("upstream:{path}");
                    let _ = write!(
                        stream,
                        "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\
                         connection: close\r\n\r\n{body}",
                        body.len()
                    );
                });
            }
        });
        Self { port, connections }
    }

    /// How many connections it has accepted.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}
