//! Shared pieces of the end-to-end tests: a real Mosquitto on a free port, an independent
//! `mosquitto_sub`, the real `screenline` binary, and simulated line hardware on
//! pseudo-terminals driven by the real firmware logic.
#![allow(dead_code)]

pub mod browser;
pub mod http;
pub mod rig;

use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A temporary folder, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!(
            "screenline-test-{tag}-{}-{}",
            std::process::id(),
            Instant::now().elapsed().as_nanos() ^ rand_suffix()
        ));
        std::fs::create_dir_all(&p).expect("temp dir");
        TempDir(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A test's temporary folder with a real Mosquitto on a free port; the broker is stopped
/// before the folder is removed.
pub struct Site {
    _broker: Proc,
    pub port: u16,
    pub dir: TempDir,
}

impl Site {
    pub fn start(tag: &str) -> Site {
        let dir = TempDir::new(tag);
        let port = free_port();
        Site {
            _broker: start_mosquitto(dir.path(), port),
            port,
            dir,
        }
    }

    /// A subscriber on `topic` at this site's broker.
    pub fn sub(&self, topic: &str) -> Sub {
        Sub::start(self.dir.path(), self.port, topic)
    }
}

/// A free TCP port on loopback.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A child process killed on drop.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn mosquitto_bin() -> PathBuf {
    for p in ["/usr/sbin/mosquitto", "/usr/bin/mosquitto"] {
        if Path::new(p).exists() {
            return PathBuf::from(p);
        }
    }
    PathBuf::from("mosquitto")
}

/// A real Mosquitto broker on `port`, anonymous, loopback only.
pub fn start_mosquitto(dir: &Path, port: u16) -> Proc {
    start_broker(dir, port, false, "")
}

/// A Mosquitto that keeps sessions and queued messages on disk in `dir` across restarts
/// (stopped with SIGTERM, it saves them), so that a durable subscriber misses nothing.
pub fn start_mosquitto_persistent(dir: &Path, port: u16) -> Proc {
    start_broker(dir, port, true, "")
}

/// A Mosquitto configured as docs/INSTALL.md tells a site to: it refuses packets over the
/// appliance's own limit (8 MiB), which rumqttc would otherwise take as a broken link.
pub fn start_mosquitto_as_deployed(dir: &Path, port: u16) -> Proc {
    start_broker(dir, port, false, "max_packet_size 8388608\n")
}

fn start_broker(dir: &Path, port: u16, persistent: bool, extra: &str) -> Proc {
    let conf = dir.join(format!("mosquitto-{port}.conf"));
    let persistence = if persistent {
        // Started as root, Mosquitto drops to its own user: its state folder must be
        // writable by that user, or it silently saves nothing and forgets every session.
        let state = dir.join("mosquitto-state");
        std::fs::create_dir_all(&state).expect("broker state folder");
        std::fs::set_permissions(&state, std::os::unix::fs::PermissionsExt::from_mode(0o777))
            .expect("broker state folder permissions");
        format!(
            "persistence true\npersistence_location {}/\nmax_queued_messages 0\nmax_inflight_messages 0\n",
            state.display()
        )
    } else {
        "persistence false\n".to_owned()
    };
    std::fs::write(
        &conf,
        format!("listener {port} 127.0.0.1\nallow_anonymous true\n{persistence}{extra}"),
    )
    .expect("mosquitto config");
    let child = Command::new(mosquitto_bin())
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("mosquitto must be installed: run tests/setup.sh");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "mosquitto did not start on {port}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Proc(child)
}

/// `screenline store check` of a stopped appliance's data folder must pass.
pub fn store_check(data: &Path) {
    run_ok(
        Command::new(env!("CARGO_BIN_EXE_screenline"))
            .args(["store", "check", "--data"])
            .arg(data),
    );
}

/// Runs `cmd` to its end; it must succeed, or the test fails with what it printed.
pub fn run_ok(cmd: &mut Command) -> std::process::Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?} did not start: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Runs `cmd` with `input` on its standard input, to its end, and returns what it printed
/// (the test fails if it cannot start: `install` says what provides it).
pub fn run_with_input(cmd: &mut Command, input: &[u8], install: &str) -> std::process::Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{cmd:?} did not start ({install}): {e}"));
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(input).expect("write to its stdin");
    }
    child.wait_with_output().expect("its output")
}

/// Stops a process with SIGTERM and waits for it (a broker saves its state).
pub fn terminate(p: &mut Proc) {
    let _ = Command::new("kill")
        .args(["-TERM", &p.0.id().to_string()])
        .status();
    let _ = p.0.wait();
}

/// The resident set size of a process, in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    proc_status_kib(pid, "VmRSS")
}

/// The peak resident memory of a process so far (VmHWM), in KiB.
pub fn peak_kib(pid: u32) -> u64 {
    proc_status_kib(pid, "VmHWM")
}

/// A KiB figure `field` of `/proc/<pid>/status`; 0 when the process is gone.
fn proc_status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// GET `path` on loopback `port`; the body, or empty when nothing answers.
pub fn http_get(port: u16, path: &str) -> String {
    use std::io::Read;
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return String::new();
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    );
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default()
}

/// A value from the console's Prometheus `/metrics`.
pub fn metric(port: u16, name: &str) -> Option<u64> {
    http_get(port, "/metrics")
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name} "))?.trim().parse().ok())
}

/// The payload of a durable subscriber's probe (see [`Sub::durable`]).
const PROBE: &str = "screenline-test-probe";

/// `mosquitto_sub -v` on `topic`, its output collected in a file.
pub struct Sub {
    proc: Proc,
    out: PathBuf,
}

impl Sub {
    pub fn start(dir: &Path, port: u16, topic: &str) -> Sub {
        Sub::spawn(dir, port, topic, &[])
    }

    /// A subscriber with a persistent session (`-c -i id`): the broker keeps what arrives
    /// for it while it is away, and it reconnects by itself.
    ///
    /// Returns once the session provably exists at the broker — a probe message published
    /// on the topic has reached it (the probe is left out of [`Sub::messages`]) — so a test
    /// may take the broker down at once without racing the subscription.
    pub fn durable(dir: &Path, port: u16, topic: &str, id: &str) -> Sub {
        let sub = Sub::spawn(dir, port, topic, &["-c", "-i", id]);
        let probe_topic = topic.replace(['#', '+'], "probe");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let _ = mosquitto_pub(port, &probe_topic, PROBE, &[]);
            let wait = Instant::now() + Duration::from_millis(500);
            while Instant::now() < wait {
                if std::fs::read_to_string(&sub.out).is_ok_and(|t| t.contains(PROBE)) {
                    return sub;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            assert!(
                Instant::now() < deadline,
                "the durable subscription {id} never came up"
            );
        }
    }

    /// A subscriber with more `mosquitto_sub` arguments (TLS files, say).
    pub fn spawn(dir: &Path, port: u16, topic: &str, extra: &[&str]) -> Sub {
        let out = dir.join(format!("sub-{}.txt", rand_suffix()));
        let file = std::fs::File::create(&out).expect("sub output");
        let child = Command::new("mosquitto_sub")
            .args(client_args(port))
            .args(["-v", "-t", topic])
            .args(extra)
            .stdout(file)
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto_sub must be installed: run tests/setup.sh");
        // Give the subscription time to reach the broker before anything is published.
        std::thread::sleep(Duration::from_millis(300));
        Sub {
            proc: Proc(child),
            out,
        }
    }

    /// The messages received so far, as (topic, payload).
    pub fn messages(&self) -> Vec<(String, String)> {
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_once(' '))
            .filter(|(_, p)| *p != PROBE)
            .map(|(t, p)| (t.to_owned(), p.to_owned()))
            .collect()
    }

    /// Waits until a status message here says the appliance is in `state` ("online",
    /// "stopped"), or panics after `timeout`.
    pub fn wait_state(&self, timeout: Duration, state: &str) -> Vec<(String, String)> {
        let said = format!("\"state\":\"{state}\"");
        self.wait_for(timeout, &format!("status {state}"), |m| {
            m.iter().any(|(_, p)| p.contains(&said))
        })
    }

    /// Waits until `pred` holds for the messages, or panics after `timeout`.
    pub fn wait_for(
        &self,
        timeout: Duration,
        what: &str,
        pred: impl Fn(&[(String, String)]) -> bool,
    ) -> Vec<(String, String)> {
        let deadline = Instant::now() + timeout;
        loop {
            let m = self.messages();
            if pred(&m) {
                return m;
            }
            if Instant::now() >= deadline {
                let tail: Vec<String> = m
                    .iter()
                    .rev()
                    .take(3)
                    .map(|(t, p)| format!("{t} {}", p.chars().take(300).collect::<String>()))
                    .collect();
                panic!(
                    "timed out waiting for {what}; got {} messages, the last: {tail:#?}",
                    m.len()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Sub {
    fn drop(&mut self) {
        let _ = self.proc.0.kill();
    }
}

/// A Mosquitto client's arguments for the test broker on `port`: loopback, QoS 1.
fn client_args(port: u16) -> [String; 6] {
    ["-h", "127.0.0.1", "-p", &port.to_string(), "-q", "1"].map(str::to_owned)
}

/// `mosquitto_pub` of `message` on `topic` to the broker on `port`, with more arguments
/// `extra` (TLS files, say); what it did.
pub fn mosquitto_pub(
    port: u16,
    topic: &str,
    message: &str,
    extra: &[&str],
) -> std::process::Output {
    Command::new("mosquitto_pub")
        .args(client_args(port))
        .args(["-t", topic, "-m", message])
        .args(extra)
        .output()
        .expect("mosquitto_pub must be installed: run tests/setup.sh")
}

/// The real `screenline` binary, started with a config file, its log kept in `dir`.
pub struct Appliance {
    pub proc: Proc,
    pub log: PathBuf,
}

impl Appliance {
    pub fn start(dir: &Path, config: &str) -> Appliance {
        Appliance::start_with_env(dir, config, &[])
    }

    /// [`Appliance::start`] with extra environment variables.
    pub fn start_with_env(dir: &Path, config: &str, env: &[(&str, &str)]) -> Appliance {
        let conf = dir.join("screenline.toml");
        std::fs::write(&conf, config).expect("config");
        let log = dir.join("screenline.log");
        let logf = std::fs::File::create(&log).expect("log");
        let child = Command::new(env!("CARGO_BIN_EXE_screenline"))
            .arg("run")
            .arg("--config")
            .arg(&conf)
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(logf)
            .spawn()
            .expect("screenline binary");
        Appliance {
            proc: Proc(child),
            log,
        }
    }

    /// `screenline demo` with `args`, its log (stderr: warnings and the banner) in `dir`.
    pub fn demo(dir: &Path, args: &[&str]) -> Appliance {
        let log = dir.join(format!("demo-{}.log", rand_suffix()));
        let child = Command::new(env!("CARGO_BIN_EXE_screenline"))
            .arg("demo")
            .args(args)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log"))
            .spawn()
            .expect("screenline demo");
        Appliance {
            proc: Proc(child),
            log,
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until `find` picks something out of the log (while the process runs).
    pub fn wait_log(
        &mut self,
        timeout: Duration,
        what: &str,
        find: impl Fn(&str) -> Option<String>,
    ) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let text = self.log_text();
            if let Some(found) = find(&text) {
                return found;
            }
            assert!(self.is_running(), "exited before {what}: {text}");
            assert!(Instant::now() < deadline, "no {what}: {text}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    /// Stops the process as Ctrl-C does (SIGINT); it must exit 0 within `timeout`, or the
    /// test fails with how it ended (or that it still runs) and its last log lines.
    pub fn stop_cleanly(&mut self, timeout: Duration) {
        let pid = self.proc.0.id().to_string();
        let _ = Command::new("kill").args(["-INT", &pid]).status();
        let status = self.wait_exit(timeout);
        if !status.is_some_and(|s| s.success()) {
            let log = self.log_text();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            panic!(
                "no clean stop after SIGINT: {status:?} within {timeout:?}; last log lines:\n{}",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
    }

    /// Waits for the process to exit; how it did, or `None` if it still runs after `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.proc.0.try_wait() {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits for a run that ends by itself (a demo of so many parcels); it must exit 0
    /// within `timeout`.
    pub fn finish(mut self, timeout: Duration) {
        match self.wait_exit(timeout) {
            Some(status) => assert!(status.success(), "failed: {}", self.log_text()),
            None => panic!("did not finish in {timeout:?}: {}", self.log_text()),
        }
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.proc.0.try_wait(), Ok(None))
    }
}

/// Writes a reader record to the reader's pty master as the scanner would (CRLF).
pub fn send_record(reader: &mut std::fs::File, record: &str) {
    reader
        .write_all(format!("{record}\r\n").as_bytes())
        .expect("reader write");
}

/// A JSON waybill with valid real-name data.
pub fn valid_waybill(no: &str) -> String {
    serde_json::json!({
        "waybill": no,
        "sender": {"name": "张三", "id_type": "resident_id", "id_number": "11010519491231002X",
                   "phone": "13800138000", "address": "北京市朝阳区某某路1号"},
        "recipient": {"name": "李四", "phone": "13900139000", "address": "上海市长宁区某某路2号"},
        "declared": {"goods": "蓝牙耳机", "category": "electronics", "value_cny": 399.0, "quantity": 1},
        "weight_g": 850,
        "agreement_customer": null
    })
    .to_string()
}

/// The configuration for one line on the given ports.
pub fn line_config(
    data: &Path,
    broker_port: u16,
    reader: &Path,
    controller: &Path,
    xray: &Path,
) -> String {
    line_config_on(data, broker_port, reader, controller, xray, free_port())
}

/// [`line_config`] with the console on `console`.
pub fn line_config_on(
    data: &Path,
    broker_port: u16,
    reader: &Path,
    controller: &Path,
    xray: &Path,
    console: u16,
) -> String {
    format!(
        r#"
site_id = "T1"
appliance_id = "a1"
data_dir = "{data}"
[mqtt]
url = "mqtt://127.0.0.1:{broker_port}"
keep_alive_s = 5
[console]
listen = "127.0.0.1:{console}"
[[lines]]
id = "L1"
reader_port = "{reader}"
controller_port = "{controller}"
xray_dir = "{xray}"
[lines.controller]
eye_to_gate_mm = 5000
"#,
        data = data.display(),
        reader = reader.display(),
        controller = controller.display(),
        xray = xray.display(),
    )
}

/// Where a test keeps what a person may want to look at afterwards (screenshots):
/// `<target>/test-artefacts/<name>/`.
pub fn artefacts_dir(name: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let dir = target.join("test-artefacts").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("artefacts folder");
    dir
}
