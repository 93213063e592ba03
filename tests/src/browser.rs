//! A real browser for the web page's tests: Debian's Chromium driven
//! headless by chromedriver over the W3C WebDriver protocol (JSON over
//! HTTP on loopback; the few requests needed are written here over a plain
//! TCP stream). Both processes are killed on drop.

use std::io::{BufReader, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A chromedriver with one headless Chromium session.
#[derive(Debug)]
pub struct Browser {
    driver: Child,
    port: u16,
    session: String,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium that accepts the
    /// gateway's self-signed certificate.
    pub fn start() -> Browser {
        super::require("chromium", "chromium");
        super::require("chromedriver", "chromium-driver");
        let port = super::free_port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting chromedriver");
        let profile = tempfile::tempdir().unwrap();
        let mut b = Browser {
            driver,
            port,
            session: String::new(),
            _profile: profile,
        };
        let start = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "chromedriver did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "acceptInsecureCerts": true,
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--ignore-certificate-errors", "--window-size=1280,1000",
                         format!("--user-data-dir={}", b._profile.path().display())]
            }
        }}});
        let v = b.call("POST", "/session", Some(&caps));
        b.session = v["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {v}"))
            .to_string();
        b
    }

    /// One WebDriver command; returns its `value`, panics on an error.
    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        let (status, v) = self.request(method, path, body);
        assert!(status < 300, "{method} {path}: {status} {v}");
        v["value"].clone()
    }

    fn request(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).expect("chromedriver");
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        let payload = body.map(Value::to_string).unwrap_or_default();
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{payload}",
            payload.len()
        )
        .unwrap();
        let resp = super::http::read_response(&mut BufReader::new(s));
        (
            resp.status,
            serde_json::from_slice(&resp.body).unwrap_or(Value::Null),
        )
    }

    fn at(&self, rest: &str) -> String {
        format!("/session/{}{rest}", self.session)
    }

    /// Resizes the window (CSS pixels).
    pub fn set_window(&self, width: u32, height: u32) {
        self.call(
            "POST",
            &self.at("/window/rect"),
            Some(&json!({"width": width, "height": height})),
        );
    }

    pub fn go(&self, url: &str) {
        self.call("POST", &self.at("/url"), Some(&json!({"url": url})));
    }

    pub fn url(&self) -> String {
        self.call("GET", &self.at("/url"), None)
            .as_str()
            .unwrap_or("")
            .to_string()
    }

    /// The element matching a CSS selector (waits up to 10 s for it).
    pub fn find(&self, css: &str) -> String {
        let start = Instant::now();
        loop {
            let (status, v) = self.request(
                "POST",
                &self.at("/element"),
                Some(&json!({"using": "css selector", "value": css})),
            );
            if status < 300 {
                return v["value"][ELEMENT].as_str().unwrap_or("").to_string();
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "no element {css} on {}: {v}",
                self.url()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn count(&self, css: &str) -> usize {
        self.call(
            "POST",
            &self.at("/elements"),
            Some(&json!({"using": "css selector", "value": css})),
        )
        .as_array()
        .map_or(0, Vec::len)
    }

    pub fn type_into(&self, css: &str, text: &str) {
        let e = self.find(css);
        self.call(
            "POST",
            &self.at(&format!("/element/{e}/clear")),
            Some(&json!({})),
        );
        self.call(
            "POST",
            &self.at(&format!("/element/{e}/value")),
            Some(&json!({"text": text})),
        );
    }

    pub fn click(&self, css: &str) {
        let e = self.find(css);
        self.call(
            "POST",
            &self.at(&format!("/element/{e}/click")),
            Some(&json!({})),
        );
    }

    /// The text of the element matching `css`; retried while the page is
    /// being replaced (a stale element).
    pub fn text(&self, css: &str) -> String {
        let start = Instant::now();
        loop {
            let e = self.find(css);
            let (status, v) = self.request("GET", &self.at(&format!("/element/{e}/text")), None);
            if status < 300 {
                return v["value"].as_str().unwrap_or("").to_string();
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "the text of {css}: {v}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The page's whole HTML.
    pub fn source(&self) -> String {
        self.call("GET", &self.at("/source"), None)
            .as_str()
            .unwrap_or("")
            .to_string()
    }

    /// Runs `script` (a function body; `arguments[0]`… are `args`).
    pub fn run(&self, script: &str, args: &[Value]) -> Value {
        self.call(
            "POST",
            &self.at("/execute/sync"),
            Some(&json!({"script": script, "args": args})),
        )
    }

    /// Runs `script` that calls `arguments[arguments.length - 1]` with its
    /// result when done.
    pub fn run_async(&self, script: &str, args: &[Value]) -> Value {
        self.call(
            "POST",
            &self.at("/execute/async"),
            Some(&json!({"script": script, "args": args})),
        )
    }

    /// Waits until `what` returns `Some` (10 s at most, else panics with
    /// `describe`).
    pub fn wait<T>(
        &self,
        describe: &str,
        limit: Duration,
        mut what: impl FnMut(&Browser) -> Option<T>,
    ) -> T {
        let start = Instant::now();
        loop {
            if let Some(v) = what(self) {
                return v;
            }
            assert!(
                start.elapsed() < limit,
                "waited {limit:?} for {describe}; page {}",
                self.url()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Saves a PNG screenshot of the page.
    pub fn screenshot(&self, path: &Path) {
        let b64 = self.call("GET", &self.at("/screenshot"), None);
        let png = base64_decode(b64.as_str().unwrap_or(""));
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).unwrap();
        }
        std::fs::write(path, png).unwrap();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _closed = self.request("DELETE", &format!("/session/{}", self.session), None);
        }
        let _killed = self.driver.kill();
        let _reaped = self.driver.wait();
    }
}

/// Standard base64 (RFC 4648, with padding) to bytes.
pub fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0);
    for v in s.bytes().filter_map(val) {
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_decodes_rfc_4648_vectors() {
        for (plain, enc) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(super::base64_decode(enc), plain.as_bytes());
        }
    }
}
