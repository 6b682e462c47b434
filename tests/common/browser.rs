//! A real headless Chromium (Debian's `chromium`) driven through
//! `chromedriver` and the fantoccini WebDriver client, for the console's
//! end-to-end tests. Blocking helpers (each call runs on a runtime of the
//! browser's own) that panic with a clear message: tests stay plain
//! `#[test]` functions. chromedriver, Chromium and the profile directory
//! are gone after drop, also when the test fails.
//!
//! Needs /usr/bin/chromium and /usr/bin/chromedriver (tests/setup.sh).

use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

use super::unique_dir;

pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// Every single WebDriver call gives up after this long.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);
const WIDTH: u32 = 1366;
const HEIGHT: u32 = 900;

/// Where `screenshot` saves: `target/console-screenshots/`.
pub fn screenshot_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"));
    target.join("console-screenshots")
}

/// A free TCP port on loopback (for chromedriver, or a test server).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn spawn_driver(port: u16, log: &Path) -> Child {
    Command::new(CHROMEDRIVER)
        .arg(format!("--port={port}"))
        .arg(format!("--log-path={}", log.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        // Its own process group: drop kills Chromium with it, even if the
        // session never closed.
        .process_group(0)
        .spawn()
        .expect("start chromedriver")
}

pub struct Browser {
    client: Option<Client>,
    rt: tokio::runtime::Runtime,
    driver: Child,
    dir: PathBuf,
}

impl Browser {
    /// A browser whose pages ask for English (`Accept-Language: en-US`).
    pub fn start() -> Browser {
        Browser::with_lang("en-US")
    }

    /// A browser whose Accept-Language is `lang` (e.g. `ja`): set three
    /// ways, since Chromium takes it from the UI language, the
    /// `--accept-lang` switch or the profile preference depending on mode.
    pub fn with_lang(lang: &str) -> Browser {
        for bin in [CHROMIUM, CHROMEDRIVER] {
            assert!(
                Path::new(bin).exists(),
                "{bin} is missing: run tests/setup.sh (installs Debian's chromium and chromium-driver)"
            );
        }
        let dir = unique_dir("browser");
        let profile = dir.join("profile");
        std::fs::create_dir_all(&profile).unwrap();
        let log = dir.join("chromedriver.log");
        let mut port = free_port();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let mut b = Browser {
            client: None,
            rt,
            driver: spawn_driver(port, &log),
            dir,
        };
        b.wait_driver(&mut port, &log);

        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            // Without these, Chromium's own background connections go out
            // to the network, which is closed here, and page loads stall.
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-default-apps",
            "--hide-scrollbars",
            &format!("--window-size={WIDTH},{HEIGHT}"),
            &format!("--user-data-dir={}", profile.display()),
            &format!("--lang={lang}"),
            &format!("--accept-lang={lang}"),
        ];
        let caps = json!({
            "browserName": "chrome",
            // The console's TLS tests use self-signed certificates.
            "acceptInsecureCerts": true,
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": args,
                "prefs": { "intl.accept_languages": lang },
            },
        });
        let caps = match caps {
            serde_json::Value::Object(m) => m,
            _ => unreachable!(),
        };
        // The port is free when picked, not when chromedriver binds it: a
        // test running alongside may take it first, and what answers is
        // then not our chromedriver. A new port and driver fix that.
        let mut attempts = 3;
        let client = loop {
            let url = format!("http://127.0.0.1:{port}");
            let client = b.rt.block_on(async {
                tokio::time::timeout(
                    CALL_TIMEOUT,
                    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
                        .capabilities(caps.clone())
                        .connect(&url),
                )
                .await
            });
            attempts -= 1;
            match client {
                Ok(Err(e)) if attempts > 0 => {
                    eprintln!("chromedriver on port {port} did not start a session ({e}); again on another port");
                    b.kill_driver();
                    port = free_port();
                    b.driver = spawn_driver(port, &log);
                    b.wait_driver(&mut port, &log);
                }
                other => break other,
            }
        };
        match client {
            Ok(Ok(c)) => b.client = Some(c),
            Ok(Err(e)) => panic!(
                "chromedriver could not start Chromium: {e}\nchromedriver log:\n{}",
                tail(&log)
            ),
            Err(_) => panic!(
                "Chromium did not start within {CALL_TIMEOUT:?}\nchromedriver log:\n{}",
                tail(&log)
            ),
        }
        b
    }

    /// chromedriver's whole process group (Chromium with it).
    fn kill_driver(&mut self) {
        unsafe {
            libc::killpg(self.driver.id() as i32, libc::SIGKILL);
        }
        let _ = self.driver.wait();
    }

    /// Until chromedriver listens on `port` (moved to another one if it
    /// exits at start).
    fn wait_driver(&mut self, port: &mut u16, log: &Path) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if TcpStream::connect(("127.0.0.1", *port)).is_ok() {
                return;
            }
            if let Ok(Some(st)) = self.driver.try_wait() {
                // Most likely the port was taken meanwhile: a new one.
                eprintln!("chromedriver exited ({st}) at start:\n{}", tail(log));
                *port = free_port();
                self.driver = spawn_driver(*port, log);
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver did not listen on port {port} within 20 s:\n{}",
                tail(log)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The WebDriver client itself, for what the helpers do not cover
    /// (use with `block_on`).
    pub fn client(&self) -> &Client {
        self.client.as_ref().unwrap()
    }

    /// Runs a future on the browser's runtime, at most CALL_TIMEOUT.
    #[track_caller]
    pub fn block_on<T, E: std::fmt::Display>(
        &self,
        what: &str,
        f: impl std::future::Future<Output = Result<T, E>>,
    ) -> T {
        match self
            .rt
            .block_on(async { tokio::time::timeout(CALL_TIMEOUT, f).await })
        {
            Ok(Ok(v)) => v,
            Ok(Err(e)) => panic!("browser: {what}: {e}"),
            Err(_) => panic!("browser: {what}: no answer within {CALL_TIMEOUT:?}"),
        }
    }

    #[track_caller]
    pub fn goto(&self, url: &str) {
        self.block_on(&format!("goto {url}"), self.client().goto(url));
    }

    /// The URL the browser shows now (after redirects).
    #[track_caller]
    pub fn url(&self) -> String {
        self.block_on("current url", self.client().current_url())
            .to_string()
    }

    /// The page's HTML as the browser has it now.
    #[track_caller]
    pub fn source(&self) -> String {
        self.block_on("page source", self.client().source())
    }

    /// Replaces the value of the field at `css` with `text`.
    #[track_caller]
    pub fn fill(&self, css: &str, text: &str) {
        let c = self.client();
        self.block_on(&format!("fill {css}"), async {
            let e = c.find(Locator::Css(css)).await?;
            e.clear().await?;
            e.send_keys(text).await
        });
    }

    #[track_caller]
    pub fn click(&self, css: &str) {
        let c = self.client();
        self.block_on(&format!("click {css}"), async {
            c.find(Locator::Css(css)).await?.click().await
        });
    }

    /// The visible text of the element at `css`.
    #[track_caller]
    pub fn text(&self, css: &str) -> String {
        let c = self.client();
        self.block_on(&format!("text of {css}"), async {
            c.find(Locator::Css(css)).await?.text().await
        })
    }

    /// An attribute (or property, e.g. `value`) of the element at `css`.
    #[track_caller]
    pub fn attr(&self, css: &str, name: &str) -> Option<String> {
        let c = self.client();
        self.block_on(&format!("{name} of {css}"), async {
            let e = c.find(Locator::Css(css)).await?;
            match e.attr(name).await? {
                Some(v) => Ok(Some(v)),
                None => e.prop(name).await,
            }
        })
    }

    /// Whether an element matches `css` now.
    #[track_caller]
    pub fn exists(&self, css: &str) -> bool {
        let c = self.client();
        !self
            .block_on(&format!("find {css}"), c.find_all(Locator::Css(css)))
            .is_empty()
    }

    /// Waits until an element matches `css`.
    #[track_caller]
    pub fn wait_for(&self, css: &str, timeout: Duration) {
        let c = self.client();
        let r = self.rt.block_on(
            c.wait()
                .at_most(timeout)
                .every(Duration::from_millis(50))
                .for_element(Locator::Css(css)),
        );
        if let Err(e) = r {
            panic!(
                "browser: no {css} within {timeout:?} ({e}) on {}",
                self.url()
            );
        }
    }

    /// Waits until the text of `css` contains `needle` (for pages that
    /// update themselves).
    #[track_caller]
    pub fn wait_for_text(&self, css: &str, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let c = self.client();
            let t = self.rt.block_on(async {
                let e = c.find(Locator::Css(css)).await.ok()?;
                e.text().await.ok()
            });
            if let Some(t) = &t {
                if t.contains(needle) {
                    return t.clone();
                }
            }
            assert!(
                Instant::now() < deadline,
                "browser: {css} did not come to contain {needle:?} within {timeout:?} (it says {t:?})"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Runs JavaScript in the page (`return ...` gives a value back).
    #[track_caller]
    pub fn exec(&self, js: &str) -> serde_json::Value {
        self.block_on("script", self.client().execute(js, Vec::new()))
    }

    /// Saves a PNG of the whole page (not only the window: the window grows
    /// to the page's height for the shot) as
    /// `target/console-screenshots/NAME.png`; returns its path.
    #[track_caller]
    pub fn screenshot(&self, name: &str) -> PathBuf {
        let c = self.client();
        let h = self
            .exec("return Math.ceil(Math.max(document.documentElement.scrollHeight, document.body ? document.body.scrollHeight : 0))")
            .as_u64()
            .unwrap_or(HEIGHT as u64)
            .clamp(HEIGHT as u64, 10_000) as u32;
        // Headless Chromium's viewport is shorter than its window (by the
        // invisible browser chrome): grow the window by that difference too,
        // or the bottom of the page is cut off.
        let chrome = self
            .exec("return Math.max(0, window.outerHeight - window.innerHeight)")
            .as_u64()
            .unwrap_or(0)
            .min(400) as u32;
        if h > HEIGHT {
            self.block_on("resize", c.set_window_size(WIDTH, h + chrome));
            self.exec("window.scrollTo(0, 0); return 0");
        }
        let png = self.block_on("screenshot", c.screenshot());
        if h > HEIGHT {
            self.block_on("resize", c.set_window_size(WIDTH, HEIGHT));
        }
        let dir = screenshot_dir();
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap();
        path
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(c) = self.client.take() {
            let _ = self
                .rt
                .block_on(async { tokio::time::timeout(Duration::from_secs(10), c.close()).await });
        }
        // The whole group: chromedriver and any Chromium it left.
        self.kill_driver();
        if std::env::var_os("SWIFTGATE_KEEP_TEST_DIRS").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn tail(log: &Path) -> String {
    let s = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}
