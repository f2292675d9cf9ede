//! Headless Chromium (Debian's `chromium`) for the console's end-to-end tests, driven through
//! WebDriver: Debian's `chromedriver` on a free loopback port, spoken to by the `fantoccini`
//! client. Navigate, evaluate JavaScript, wait for a condition, fill and click like a user,
//! screenshot. Every command and every wait has a deadline; a failed wait saves a screenshot
//! before it panics. When the `Browser` is dropped — at the end of a test or while a failing
//! one unwinds — the session is closed and chromedriver is killed with every browser process
//! it started.
//!
//! The API is blocking (each `Browser` runs its own single-threaded tokio runtime), for plain
//! `#[test]` functions: do not use it from inside another tokio runtime.

use super::{free_port, http_get};
use fantoccini::error::CmdError;
use fantoccini::wd::TimeoutConfiguration;
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{json, Value};
use std::future::Future;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// What this machine needs: no sandbox (root in a container), no GPU, nothing that phones home
/// or updates itself, a screen size the screenshots are read at, and the console's language.
const CHROMIUM_ARGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1400,900",
    "--lang=zh-CN",
];

/// How long chromedriver has to come up and to start a browser session.
const START: Duration = Duration::from_secs(60);
/// How long a page has to load (WebDriver's page-load timeout).
const PAGE_LOAD: Duration = Duration::from_secs(60);
/// How long a script may run (WebDriver's script timeout).
const SCRIPT: Duration = Duration::from_secs(30);
/// How long any one command may take before the test gives up on chromedriver; longer than
/// the page-load timeout, so that chromedriver reports a slow page itself.
const COMMAND: Duration = Duration::from_secs(90);
/// How long closing the session may take before chromedriver is killed regardless.
const CLOSE: Duration = Duration::from_secs(15);

/// What went wrong driving the browser.
#[derive(Debug, thiserror::Error)]
enum BrowserError {
    #[error(transparent)]
    Driver(#[from] CmdError),
    #[error("chromedriver did not answer within {0:?}")]
    NoAnswer(Duration),
    #[error("write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The chromedriver process and the browser profile: the process group (chromedriver and every
/// Chromium process it starts) is killed and the profile removed on drop, so nothing is left
/// behind even when the session never came up.
struct Driver {
    child: Child,
    port: u16,
    profile: PathBuf,
    log: PathBuf,
}

impl Driver {
    fn start(artefacts: &Path) -> Driver {
        for (binary, package) in [(CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")] {
            assert!(
                Path::new(binary).exists(),
                "{binary} is missing: tests/setup.sh installs Debian's {package}"
            );
        }
        let port = free_port();
        let profile =
            std::env::temp_dir().join(format!("screenline-chromium-{}-{port}", std::process::id()));
        let log = artefacts.join("chromedriver.log");
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .arg(format!("--log-path={}", log.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Its own process group, so that one signal reaches every browser process too.
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("start {CHROMEDRIVER}: {e}"));
        let mut driver = Driver {
            child,
            port,
            profile,
            log,
        };
        driver.wait_ready();
        driver
    }

    /// Waits until chromedriver's `/status` says it takes sessions.
    fn wait_ready(&mut self) {
        let deadline = Instant::now() + START;
        loop {
            let status = http_get(self.port, "/status");
            let ready = serde_json::from_str::<Value>(&status)
                .is_ok_and(|v| v["value"]["ready"] == Value::Bool(true));
            if ready {
                return;
            }
            if let Ok(Some(exit)) = self.child.try_wait() {
                panic!(
                    "chromedriver on port {} exited ({exit}) before it was ready; its log: {}",
                    self.port,
                    self.log_text()
                );
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver on port {} not ready within {START:?}; its log: {}",
                self.port,
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.child.id()) {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// `future` within `limit`; the timer is made inside the runtime, where it must be.
async fn within<F: Future>(
    limit: Duration,
    future: F,
) -> Result<F::Output, tokio::time::error::Elapsed> {
    tokio::time::timeout(limit, future).await
}

/// A running browser with one WebDriver session.
pub struct Browser {
    client: Client,
    runtime: tokio::runtime::Runtime,
    driver: Driver,
    artefacts: PathBuf,
}

impl Browser {
    /// Starts chromedriver and, through it, headless Chromium with a fresh profile;
    /// screenshots (and chromedriver's log) go to `artefacts`.
    pub fn launch(artefacts: &Path) -> Browser {
        std::fs::create_dir_all(artefacts).expect("artefacts folder");
        let driver = Driver::start(artefacts);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime for the WebDriver client");
        let mut args: Vec<String> = CHROMIUM_ARGS.iter().map(|a| a.to_string()).collect();
        args.push(format!("--user-data-dir={}", driver.profile.display()));
        let capabilities = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": CHROMIUM, "args": args},
        });
        let Value::Object(capabilities) = capabilities else {
            unreachable!("a JSON object literal")
        };
        let session = async {
            let client = ClientBuilder::new(HttpConnector::new())
                .capabilities(capabilities)
                .connect(&driver.url())
                .await?;
            client
                .update_timeouts(TimeoutConfiguration::new(
                    Some(SCRIPT),
                    Some(PAGE_LOAD),
                    None,
                ))
                .await?;
            Ok::<_, anyhow::Error>(client)
        };
        let client = match runtime.block_on(within(START, session)) {
            Ok(Ok(client)) => client,
            Ok(Err(e)) => panic!(
                "no browser session from chromedriver: {e:#}; its log: {}",
                driver.log_text()
            ),
            Err(_) => panic!(
                "no browser session from chromedriver within {START:?}; its log: {}",
                driver.log_text()
            ),
        };
        Browser {
            client,
            runtime,
            driver,
            artefacts: artefacts.to_owned(),
        }
    }

    /// The process group of chromedriver and every Chromium process it started.
    pub fn process_group(&self) -> u32 {
        self.driver.child.id()
    }

    /// The browser's page (its one window).
    pub fn page(&self) -> Page<'_> {
        Page { browser: self }
    }

    /// Runs one WebDriver command to completion, within [`COMMAND`].
    fn command<T>(
        &self,
        command: impl Future<Output = Result<T, CmdError>>,
    ) -> Result<T, BrowserError> {
        self.runtime
            .block_on(within(COMMAND, command))
            .map_err(|_| BrowserError::NoAnswer(COMMAND))?
            .map_err(BrowserError::from)
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Ending the session lets chromedriver quit Chromium; the driver's drop then kills
        // whatever is left, whether or not this worked.
        let close = self.client.clone().close();
        let _ = self.runtime.block_on(within(CLOSE, close));
    }
}

/// The browser's page, driven as a user would.
pub struct Page<'b> {
    browser: &'b Browser,
}

impl Page<'_> {
    fn client(&self) -> &Client {
        &self.browser.client
    }

    /// Evaluates a JavaScript expression (awaiting a promise) and returns its value.
    pub fn eval(&mut self, js: &str) -> Value {
        self.try_eval(js)
            .unwrap_or_else(|e| panic!("JavaScript failed: {js}\n{e}"))
    }

    fn try_eval(&self, js: &str) -> Result<Value, BrowserError> {
        let script = format!("return ({js});");
        self.browser
            .command(self.client().execute(&script, Vec::new()))
    }

    /// Opens `url` and waits until the document is loaded.
    pub fn goto(&mut self, url: &str) {
        self.browser
            .command(self.client().goto(url))
            .unwrap_or_else(|e| panic!("open {url}: {e}"));
    }

    /// The page's address.
    pub fn url(&mut self) -> String {
        self.try_url()
            .unwrap_or_else(|e| panic!("the page's address: {e}"))
    }

    fn try_url(&self) -> Result<String, BrowserError> {
        self.browser
            .command(self.client().current_url())
            .map(String::from)
    }

    /// Polls `predicate` (JavaScript) until it is true; on timeout saves a screenshot and
    /// panics naming `what`.
    pub fn wait_for(&mut self, predicate: &str, timeout: Duration, what: &str) {
        let deadline = Instant::now() + timeout;
        let js = format!(
            "(() => {{ try {{ return !!({predicate}); }} catch (e) {{ return false; }} }})()"
        );
        loop {
            // A command that fails here (the page is navigating, say) is one more "not yet";
            // the last failure is reported if the wait times out.
            let last = match self.try_eval(&js) {
                Ok(Value::Bool(true)) => return,
                Ok(_) => None,
                Err(e) => Some(e),
            };
            if Instant::now() > deadline {
                let url = self
                    .try_url()
                    .unwrap_or_else(|e| format!("(no address: {e})"));
                let shot = match self.try_screenshot("timeout") {
                    Ok(path) => format!("screenshot {}", path.display()),
                    Err(e) => format!("no screenshot: {e}"),
                };
                let last = last
                    .map(|e| format!("; last failure: {e}"))
                    .unwrap_or_default();
                panic!("waited {timeout:?} for {what} at {url}; {shot}{last}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The element `selector` finds; panics if there is none.
    fn find(&self, selector: &str) -> fantoccini::elements::Element {
        self.browser
            .command(self.client().find(Locator::Css(selector)))
            .unwrap_or_else(|e| panic!("no {selector}: {e}"))
    }

    /// Types `text` into an input, replacing what it held.
    pub fn fill(&mut self, selector: &str, text: &str) {
        let field = self.find(selector);
        self.browser
            .command(field.clear())
            .unwrap_or_else(|e| panic!("clear {selector}: {e}"));
        self.browser
            .command(field.send_keys(text))
            .unwrap_or_else(|e| panic!("type into {selector}: {e}"));
    }

    /// Clicks an element (WebDriver scrolls it into view and clicks at its centre; an element
    /// covered by another fails).
    pub fn click(&mut self, selector: &str) {
        let target = self.find(selector);
        self.browser
            .command(target.click())
            .unwrap_or_else(|e| panic!("click {selector}: {e}"));
    }

    /// Presses keys as the keyboard does, on whatever has the focus (WebDriver's key codes:
    /// [`ENTER`], [`ESCAPE`] …).
    pub fn press(&mut self, keys: &str) {
        let client = self.client().clone();
        let sent = keys.to_owned();
        self.browser
            .command(async move { client.active_element().await?.send_keys(&sent).await })
            .unwrap_or_else(|e| panic!("press {keys:?}: {e}"));
    }

    /// Resizes the page's viewport to `width` × `height` CSS pixels (the window around it
    /// is made as much larger as its frame takes).
    pub fn resize(&mut self, width: u32, height: u32) {
        let mut size = (width, height);
        for _ in 0..3 {
            self.browser
                .command(self.client().set_window_size(size.0, size.1))
                .unwrap_or_else(|e| panic!("resize to {width}x{height}: {e}"));
            let inner: Vec<u32> =
                serde_json::from_value(self.eval("[window.innerWidth, window.innerHeight]"))
                    .expect("the viewport's size");
            if inner == [width, height] {
                return;
            }
            size = (
                (size.0 + width).saturating_sub(inner[0]),
                (size.1 + height).saturating_sub(inner[1]),
            );
        }
        panic!("the viewport did not become {width}x{height}");
    }

    /// Turns the mouse wheel by `delta_y` pixels (negative: away from the user) at viewport
    /// point (`x`, `y`).
    pub fn wheel(&mut self, x: i64, y: i64, delta_y: i64) {
        use fantoccini::actions::{InputSource, WheelAction, WheelActions};
        let wheel = WheelActions::new("wheel".into()).then(WheelAction::Scroll {
            duration: None,
            x,
            y,
            delta_x: 0,
            delta_y,
        });
        self.browser
            .command(self.client().perform_actions(wheel))
            .unwrap_or_else(|e| panic!("wheel at {x},{y}: {e}"));
    }

    /// Drags with the left mouse button from viewport point (`x`, `y`) by (`dx`, `dy`).
    pub fn drag(&mut self, x: f64, y: f64, dx: f64, dy: f64) {
        use fantoccini::actions::{InputSource, MouseActions, PointerAction, MOUSE_BUTTON_LEFT};
        let step = Some(Duration::from_millis(50));
        let mouse = MouseActions::new("mouse".into())
            .then(PointerAction::MoveTo {
                duration: None,
                x,
                y,
            })
            .then(PointerAction::Down {
                button: MOUSE_BUTTON_LEFT,
            })
            .then(PointerAction::MoveBy {
                duration: step,
                x: dx / 2.0,
                y: dy / 2.0,
            })
            .then(PointerAction::MoveBy {
                duration: step,
                x: dx / 2.0,
                y: dy / 2.0,
            })
            .then(PointerAction::Up {
                button: MOUSE_BUTTON_LEFT,
            });
        self.browser
            .command(self.client().perform_actions(mouse))
            .unwrap_or_else(|e| panic!("drag from {x},{y}: {e}"));
    }

    /// Saves a PNG screenshot as `<artefacts>/<name>.png`.
    pub fn screenshot(&mut self, name: &str) -> PathBuf {
        self.try_screenshot(name)
            .unwrap_or_else(|e| panic!("screenshot {name}: {e}"))
    }

    fn try_screenshot(&self, name: &str) -> Result<PathBuf, BrowserError> {
        let png = self.browser.command(self.client().screenshot())?;
        let path = self.browser.artefacts.join(format!("{name}.png"));
        match std::fs::write(&path, png) {
            Ok(()) => Ok(path),
            Err(source) => Err(BrowserError::Write { path, source }),
        }
    }
}

/// The Enter key, as WebDriver sends it.
pub const ENTER: &str = "\u{E007}";
/// The Escape key, as WebDriver sends it.
pub const ESCAPE: &str = "\u{E00C}";
