//! A minimal Chrome DevTools Protocol driver for the dashboard tests: headless Chromium with a
//! debugging port, one page, `Runtime.evaluate`, navigation, device and colour-scheme emulation,
//! screenshots, and every console message and uncaught exception the page produced.

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{json, Value};

type Socket = tungstenite::WebSocket<tungstenite::stream::MaybeTlsStream<TcpStream>>;

pub struct Browser {
    child: Child,
    _profile: tempfile::TempDir,
    ws: Socket,
    next_id: u64,
    /// Console messages and exceptions, as text.
    pub console: Vec<String>,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Browser {
    pub fn launch(chrome: &Path) -> Browser {
        let profile = tempfile::tempdir().unwrap();
        let mut child = Command::new(chrome)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--remote-debugging-port=0",
                "--remote-allow-origins=*",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("chromium starts");
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let port = loop {
            let line = lines
                .next()
                .expect("chromium prints its DevTools address")
                .unwrap();
            if let Some(rest) = line.split("ws://127.0.0.1:").nth(1) {
                break rest.split('/').next().unwrap().to_string();
            }
        };
        std::thread::spawn(move || for _ in lines {});
        let targets: Value = ureq::get(&format!("http://127.0.0.1:{port}/json/list"))
            .call()
            .unwrap()
            .into_json()
            .unwrap();
        let page = targets
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["type"] == "page")
            .expect("a page target");
        let (ws, _) = tungstenite::connect(page["webSocketDebuggerUrl"].as_str().unwrap()).unwrap();
        let mut b = Browser {
            child,
            _profile: profile,
            ws,
            next_id: 0,
            console: Vec::new(),
        };
        b.call("Runtime.enable", json!({}));
        b.call("Log.enable", json!({}));
        b.call("Page.enable", json!({}));
        b
    }

    /// Sends a command and waits for its answer, collecting console events meanwhile.
    pub fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        self.ws
            .send(tungstenite::Message::text(
                json!({ "id": id, "method": method, "params": params }).to_string(),
            ))
            .unwrap();
        loop {
            let msg = match self.ws.read().unwrap() {
                tungstenite::Message::Text(t) => t,
                _ => continue,
            };
            let v: Value = serde_json::from_str(&msg).unwrap();
            match v["method"].as_str() {
                Some("Runtime.consoleAPICalled") => self.console.push(format!(
                    "console.{}: {}",
                    v["params"]["type"], v["params"]["args"]
                )),
                Some("Runtime.exceptionThrown") => self
                    .console
                    .push(format!("exception: {}", v["params"]["exceptionDetails"])),
                Some("Log.entryAdded") => {
                    self.console.push(format!("log: {}", v["params"]["entry"]))
                }
                _ => {}
            }
            if v["id"] == id {
                if let Some(e) = v.get("error") {
                    panic!("{method}: {e}");
                }
                return v["result"].clone();
            }
        }
    }

    /// Evaluates `expr` in the page (promises awaited) and returns its JSON value.
    pub fn eval(&mut self, expr: &str) -> Value {
        let r = self.call(
            "Runtime.evaluate",
            json!({ "expression": expr, "awaitPromise": true, "returnByValue": true }),
        );
        if let Some(e) = r.get("exceptionDetails") {
            panic!("{expr}: {e}");
        }
        r["result"]["value"].clone()
    }

    /// Waits until `expr` is truthy in the page.
    pub fn wait_for(&mut self, what: &str, expr: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.eval(&format!("!!({expr})")).as_bool().unwrap_or(false) {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; console: {:#?}",
                self.console
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn goto(&mut self, url: &str) {
        self.call("Page.navigate", json!({ "url": url }));
    }

    /// Viewport width × height, phone-like (touch, narrow) or not, and light or dark.
    pub fn emulate(&mut self, width: u32, height: u32, mobile: bool, dark: bool) {
        self.call(
            "Emulation.setDeviceMetricsOverride",
            json!({ "width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile }),
        );
        self.call(
            "Emulation.setEmulatedMedia",
            json!({ "features": [{ "name": "prefers-color-scheme", "value": if dark { "dark" } else { "light" } }] }),
        );
    }

    /// A PNG of the page's whole length.
    pub fn screenshot(&mut self, file: &Path) {
        let r = self.call(
            "Page.captureScreenshot",
            json!({ "format": "png", "captureBeyondViewport": true }),
        );
        let png = base64::engine::general_purpose::STANDARD
            .decode(r["data"].as_str().unwrap())
            .unwrap();
        assert!(
            png.starts_with(b"\x89PNG") && png.len() > 10_000,
            "{file:?}"
        );
        std::fs::write(file, png).unwrap();
    }
}
