//! Headless Chromium (Debian's `chromium`) driven over the Chrome DevTools Protocol, for the
//! console's end-to-end tests: navigate, run JavaScript, wait for a condition, screenshot.
//! Every wait has a deadline; a failed wait saves a screenshot before it panics.

use super::http_get;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tungstenite::{Message, WebSocket};

const CHROMIUM: &str = "/usr/bin/chromium";

/// A running browser, killed on drop.
pub struct Browser {
    child: Child,
    port: u16,
    profile: PathBuf,
    artefacts: PathBuf,
}

impl Browser {
    /// Starts headless Chromium with a fresh profile; screenshots go to `artefacts`.
    pub fn launch(artefacts: &Path) -> Browser {
        assert!(
            Path::new(CHROMIUM).exists(),
            "{CHROMIUM} is missing: tests/setup.sh installs Debian's chromium"
        );
        std::fs::create_dir_all(artefacts).expect("artefacts folder");
        let profile = std::env::temp_dir().join(format!(
            "screenline-chromium-{}-{}",
            std::process::id(),
            super::free_port()
        ));
        let mut child = Command::new(CHROMIUM)
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-dev-shm-usage",
                "--remote-debugging-port=0",
                "--window-size=1400,900",
                "--lang=zh-CN",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("about:blank")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start chromium");
        // "DevTools listening on ws://127.0.0.1:PORT/devtools/browser/…"
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut seen = String::new();
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("ws://127.0.0.1:").nth(1) {
                    let port = rest.split('/').next().and_then(|p| p.parse::<u16>().ok());
                    let _ = tx.send(Ok(port.expect("devtools port")));
                } else {
                    seen.push_str(&line);
                    seen.push('\n');
                }
            }
            let _ = tx.send(Err(seen));
        });
        let port = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(Ok(port)) => port,
            Ok(Err(out)) => panic!("chromium exited without DevTools: {out}"),
            Err(_) => panic!("chromium did not start DevTools within 30 s"),
        };
        Browser {
            child,
            port,
            profile,
            artefacts: artefacts.to_owned(),
        }
    }

    /// The first page (tab) of the browser.
    pub fn page(&self) -> Page {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let list = http_get(self.port, "/json/list");
            let ws = serde_json::from_str::<Value>(&list).ok().and_then(|v| {
                v.as_array()?.iter().find(|t| t["type"] == "page")?["webSocketDebuggerUrl"]
                    .as_str()
                    .map(str::to_owned)
            });
            if let Some(url) = ws {
                let (socket, _) = tungstenite::connect(url).expect("connect to the page");
                if let tungstenite::stream::MaybeTlsStream::Plain(s) = socket.get_ref() {
                    s.set_read_timeout(Some(Duration::from_secs(30)))
                        .expect("read timeout");
                }
                let mut page = Page {
                    socket,
                    next_id: 0,
                    artefacts: self.artefacts.clone(),
                };
                page.call("Page.enable", json!({}));
                page.call("Runtime.enable", json!({}));
                return page;
            }
            assert!(Instant::now() < deadline, "no page in chromium: {list}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// One tab.
pub struct Page {
    socket: WebSocket<tungstenite::stream::MaybeTlsStream<TcpStream>>,
    next_id: u64,
    artefacts: PathBuf,
}

impl Page {
    /// Sends a DevTools command and returns its result (events in between are skipped).
    pub fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let msg = json!({"id": id, "method": method, "params": params}).to_string();
        self.socket
            .send(Message::text(msg))
            .unwrap_or_else(|e| panic!("{method}: {e}"));
        loop {
            let msg = self
                .socket
                .read()
                .unwrap_or_else(|e| panic!("{method}: no answer from chromium: {e}"));
            let Message::Text(text) = msg else { continue };
            let v: Value = serde_json::from_str(text.as_str()).expect("DevTools JSON");
            if v["id"] == id {
                if let Some(err) = v.get("error") {
                    panic!("{method}: {err}");
                }
                return v["result"].clone();
            }
        }
    }

    /// Evaluates JavaScript (awaiting a promise) and returns its value.
    pub fn eval(&mut self, js: &str) -> Value {
        let r = self.call(
            "Runtime.evaluate",
            json!({"expression": js, "returnByValue": true, "awaitPromise": true}),
        );
        if let Some(ex) = r.get("exceptionDetails") {
            panic!("JavaScript failed: {js}\n{ex}");
        }
        r["result"]["value"].clone()
    }

    /// Opens `url` and waits until the document is loaded.
    pub fn goto(&mut self, url: &str) {
        self.call("Page.navigate", json!({"url": url}));
        self.wait_for(
            "document.readyState === 'complete' && location.href !== 'about:blank'",
            Duration::from_secs(20),
            &format!("{url} to load"),
        );
    }

    /// The page's address.
    pub fn url(&mut self) -> String {
        self.eval("location.href").as_str().unwrap_or("").to_owned()
    }

    /// Polls `predicate` (JavaScript) until it is true; on timeout saves a screenshot and
    /// panics naming `what`.
    pub fn wait_for(&mut self, predicate: &str, timeout: Duration, what: &str) {
        let deadline = Instant::now() + timeout;
        let js = format!(
            "(() => {{ try {{ return !!({predicate}); }} catch (e) {{ return false; }} }})()"
        );
        loop {
            if self.eval(&js) == Value::Bool(true) {
                return;
            }
            if Instant::now() > deadline {
                let url = self.url();
                let shot = self.screenshot("timeout");
                panic!(
                    "waited {timeout:?} for {what} at {url}; screenshot {}",
                    shot.display()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Sets an input's value as typing would.
    pub fn fill(&mut self, selector: &str, text: &str) {
        let js = format!(
            "(() => {{ const e = document.querySelector({sel}); if (!e) throw new Error('no ' + {sel}); e.focus(); e.value = {text}; e.dispatchEvent(new Event('input', {{bubbles: true}})); return true; }})()",
            sel = Value::from(selector),
            text = Value::from(text)
        );
        self.eval(&js);
    }

    /// Clicks an element.
    pub fn click(&mut self, selector: &str) {
        let js = format!(
            "(() => {{ const e = document.querySelector({sel}); if (!e) throw new Error('no ' + {sel}); e.click(); return true; }})()",
            sel = Value::from(selector)
        );
        self.eval(&js);
    }

    /// Saves a PNG screenshot as `<artefacts>/<name>.png`.
    pub fn screenshot(&mut self, name: &str) -> PathBuf {
        use base64::Engine;
        let r = self.call("Page.captureScreenshot", json!({"format": "png"}));
        let png = base64::engine::general_purpose::STANDARD
            .decode(r["data"].as_str().unwrap_or(""))
            .expect("screenshot data");
        let path = self.artefacts.join(format!("{name}.png"));
        std::fs::write(&path, png).expect("write screenshot");
        path
    }
}
