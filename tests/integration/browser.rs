//! Headless Chromium driven over the DevTools protocol, for tests that click: real mouse
//! events at an element's centre, typed text, keys, screenshots. Console errors fail the test
//! when the browser is closed.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// A browser with one page open.
pub struct Browser {
    child: Child,
    ws: tungstenite::WebSocket<TcpStream>,
    next_id: u64,
    log: Arc<Mutex<Vec<String>>>,
    _profile: tempfile::TempDir,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Browser {
    /// Starts Chromium on `url` (debugging on 127.0.0.1 only) and attaches to its page.
    pub fn open(url: &str) -> Browser {
        let (mut command, profile) = crate::support::chromium_command("1400,1000");
        let mut child = command
            .args(["--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0"])
            .arg(url)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("chromium runs");
        // Its log is read to the end (a full pipe would stop it); the first lines name the port.
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let kept = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(ws) = line.strip_prefix("DevTools listening on ") {
                    let _ = tx.send(ws.to_owned());
                }
                kept.lock().expect("log").push(line);
            }
        });
        let browser_ws = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("chromium names its DevTools port within 30 s");
        let port: u16 = browser_ws
            .trim_start_matches("ws://127.0.0.1:")
            .split('/')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("a port on 127.0.0.1");
        let deadline = Instant::now() + Duration::from_secs(30);
        let page_ws = loop {
            let targets: Value = serde_json::from_str(&http_get(port, "/json/list")).unwrap_or(Value::Null);
            if let Some(ws) = targets
                .as_array()
                .and_then(|t| t.iter().find(|t| t["type"] == "page"))
                .and_then(|t| t["webSocketDebuggerUrl"].as_str())
            {
                break ws.to_owned();
            }
            assert!(Instant::now() < deadline, "no page target: {targets}");
            std::thread::sleep(Duration::from_millis(100));
        };
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        stream.set_read_timeout(Some(Duration::from_secs(60))).expect("timeout");
        let (ws, _) = tungstenite::client(page_ws.as_str(), stream).expect("websocket");
        Browser {
            child,
            ws,
            next_id: 0,
            log,
            _profile: profile,
        }
    }

    /// Calls a DevTools method and returns its result (events in between are skipped).
    pub fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let request = json!({"id": id, "method": method, "params": params}).to_string();
        self.ws.send(tungstenite::Message::text(request)).expect("send");
        loop {
            let message = self.ws.read().expect("a DevTools message");
            let Ok(text) = message.to_text() else { continue };
            let reply: Value = serde_json::from_str(text).expect("JSON");
            if reply["id"] == id {
                assert!(reply.get("error").is_none(), "{method}: {reply}");
                return reply["result"].clone();
            }
        }
    }

    /// The value of a JavaScript expression in the page (promises awaited).
    pub fn eval(&mut self, expression: &str) -> Value {
        let r = self.call(
            "Runtime.evaluate",
            json!({"expression": expression, "returnByValue": true, "awaitPromise": true}),
        );
        assert!(r.get("exceptionDetails").is_none(), "{expression}: {r}");
        r["result"]["value"].clone()
    }

    /// Waits (bounded) until `expression` is true in the page.
    pub fn wait_for(&mut self, expression: &str, within: Duration) {
        let deadline = Instant::now() + within;
        while self.eval(&format!("Boolean({expression})")) != Value::Bool(true) {
            assert!(Instant::now() < deadline, "not true within {within:?}: {expression}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A left click with the mouse at the centre of the first element `selector` matches
    /// (scrolled into view first).
    pub fn click(&mut self, selector: &str) {
        let at = self.eval(&format!(
            "(() => {{ const e = document.querySelector({selector:?}); if (!e) return null; e.scrollIntoView({{block: 'center'}}); \
             const r = e.getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; }})()"
        ));
        let (x, y) = (
            at[0].as_f64().unwrap_or_else(|| panic!("nothing matches {selector}")),
            at[1].as_f64().expect("y"),
        );
        for kind in ["mouseMoved", "mousePressed", "mouseReleased"] {
            self.call(
                "Input.dispatchMouseEvent",
                json!({"type": kind, "x": x, "y": y, "button": "left", "clickCount": 1}),
            );
        }
    }

    /// Types `text` into the focused element.
    pub fn type_text(&mut self, text: &str) {
        self.call("Input.insertText", json!({"text": text}));
    }

    /// Presses and releases a key (`Escape`, `Enter`…).
    pub fn key(&mut self, key: &str, code: u32) {
        for kind in ["rawKeyDown", "keyUp"] {
            self.call(
                "Input.dispatchKeyEvent",
                json!({"type": kind, "key": key, "code": key, "windowsVirtualKeyCode": code}),
            );
        }
    }

    /// A PNG of the viewport at `path`.
    pub fn screenshot(&mut self, path: &std::path::Path) {
        use base64::Engine as _;
        let shot = self.call("Page.captureScreenshot", json!({"format": "png"}));
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().expect("data"))
            .expect("base64");
        std::fs::write(path, png).expect("screenshot written");
    }

    /// Lines of the page's console that report errors.
    pub fn console_errors(&self) -> Vec<String> {
        self.log
            .lock()
            .expect("log")
            .iter()
            .filter(|l| l.contains(":CONSOLE") && (l.contains("Uncaught") || l.contains("rror")))
            .cloned()
            .collect()
    }
}

/// The body of a GET on 127.0.0.1:`port` (DevTools' own HTTP endpoint).
fn http_get(port: u16, path: &str) -> String {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return String::new();
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    );
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    text.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned()
}
