//! The console (`/ui`) in a real browser, and the monitoring files in
//! `contrib/`: headless Chromium driven through ChromeDriver (W3C WebDriver
//! over HTTP) against three node processes with token authentication; every
//! metric the Grafana dashboard and the alert rules name is exported by a
//! running node, `promtool` accepts the rules, and each alert fires on the
//! series of its unit test (`contrib/prometheus/alerts_test.yml`).
//!
//! Chromium, ChromeDriver and promtool come from Debian's `chromium`,
//! `chromium-driver` and `prometheus` packages (`contrib/check-prereqs.sh`
//! installs them); a test whose program is missing says so and passes.

use crate::support::cluster::{Bootstrap, Cluster, Scratch, eventually, request, request_text};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const READ: &str = "console-read-token-0123456789";
const WRITE: &str = "console-write-token-0123456789";
const ADMIN: &str = "console-admin-token-0123456789";
/// How long to wait for something the page should show.
const WAIT: Duration = Duration::from_secs(20);

fn program(path: &str) -> Option<PathBuf> {
    let p = PathBuf::from(path);
    p.exists().then_some(p)
}

/// A ChromeDriver process on a port the kernel chose, and one browser
/// session in it.
struct Browser {
    child: Child,
    addr: String,
    session: String,
}

impl Browser {
    /// Starts ChromeDriver and a headless Chromium window of 1400x1000
    /// with its profile in `profile`.
    fn start(driver: &Path, chromium: &Path, profile: &Path) -> Browser {
        let mut child = Command::new(driver)
            .arg("--port=0")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let out = child.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(out).lines();
        // "ChromeDriver was started successfully on port 40331."
        let port = lines
            .by_ref()
            .map_while(Result::ok)
            .find_map(|l| {
                l.strip_prefix("ChromeDriver was started successfully on port ")
                    .map(|p| p.trim_end_matches('.').to_string())
            })
            .expect("chromedriver says which port it listens on");
        std::thread::spawn(move || lines.for_each(drop));
        let addr = format!("127.0.0.1:{port}");
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium.display().to_string(),
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1400,1000",
                         format!("--user-data-dir={}", profile.display())]
            }
        }}});
        let r = webdriver(&addr, "POST", "/session", Some(&caps));
        let session = r["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no browser session: {r}"))
            .to_string();
        Browser {
            child,
            addr,
            session,
        }
    }

    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        let path = format!("/session/{}{path}", self.session);
        webdriver(&self.addr, method, &path, body)
    }

    fn open(&self, url: &str) {
        self.call("POST", "/url", Some(&json!({ "url": url })));
    }

    /// Runs `script` (a function body; `arguments` are `args`) in the page.
    fn run(&self, script: &str, args: Value) -> Value {
        let r = self.call(
            "POST",
            "/execute/sync",
            Some(&json!({"script": script, "args": args})),
        );
        if r["value"]["error"].is_string() {
            panic!("the script failed: {}\n{script}", r["value"]);
        }
        r["value"].clone()
    }

    /// Waits until `script` returns something truthy, and returns it.
    fn wait_for(&self, what: &str, script: &str, args: Value) -> Value {
        eventually(WAIT, || {
            let v = self.run(script, args.clone());
            let truthy = match &v {
                Value::Null | Value::Bool(false) => false,
                Value::String(s) => !s.is_empty(),
                Value::Number(n) => n.as_f64() != Some(0.0),
                Value::Array(a) => !a.is_empty(),
                Value::Object(_) => true,
                Value::Bool(true) => true,
            };
            truthy.then_some(v)
        })
        .unwrap_or_else(|| {
            let page = self.run("return document.body.innerText", json!([]));
            panic!("the console did not show {what} within {WAIT:?}; the page says:\n{page}")
        })
    }

    /// Sets an input's value and clicks a button.
    fn fill_and_click(&self, input: &str, value: &str, button: &str) {
        self.run(
            "document.getElementById(arguments[0]).value = arguments[1];
             document.getElementById(arguments[2]).click();",
            json!([input, value, button]),
        );
    }

    fn screenshot(&self) -> Vec<u8> {
        let r = self.call("GET", "/screenshot", None);
        let b64 = r["value"].as_str().expect("a base64 screenshot");
        ferrium::api::base64::decode(b64).expect("the screenshot is base64")
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let session = format!("/session/{}", self.session);
        let addr = self.addr.clone();
        // Closing the browser; a failure here must not hide the test's own.
        let _ = std::panic::catch_unwind(|| webdriver(&addr, "DELETE", &session, None));
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One WebDriver command. ChromeDriver keeps connections open whatever the
/// request asks, so the answer is read by its `Content-Length`.
fn webdriver(addr: &str, method: &str, path: &str, body: Option<&Value>) -> Value {
    let text = body.map(|b| b.to_string());
    let fail = |e: std::io::Error| -> ! {
        panic!("chromedriver at {addr} did not answer {method} {path}: {e}")
    };
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| fail(e));
    s.set_read_timeout(Some(Duration::from_secs(120)))
        .unwrap_or_else(|e| fail(e));
    s.write_all(request_text(addr, method, path, text.as_deref(), &[], false).as_bytes())
        .unwrap_or_else(|e| fail(e));
    let mut reader = BufReader::new(s);
    let mut status = String::new();
    reader.read_line(&mut status).unwrap_or_else(|e| fail(e));
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap_or_else(|e| fail(e));
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':')
            && k.eq_ignore_ascii_case("content-length")
        {
            length = v.trim().parse().unwrap_or(0);
        }
    }
    let mut answer = vec![0; length];
    reader.read_exact(&mut answer).unwrap_or_else(|e| fail(e));
    serde_json::from_slice(&answer).unwrap_or_else(|e| {
        panic!(
            "chromedriver answered {} ({e}): {}",
            status.trim_end(),
            String::from_utf8_lossy(&answer)
        )
    })
}

/// Width and height of a PNG image, from its header.
fn png_size(png: &[u8]) -> Option<(u32, u32)> {
    if png.len() < 24 || &png[..8] != b"\x89PNG\r\n\x1a\n" || &png[12..16] != b"IHDR" {
        return None;
    }
    let be = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    Some((be(&png[16..20]), be(&png[20..24])))
}

fn start_cluster(name: &str) -> (Cluster, Scratch) {
    let dir = Scratch::new(&format!("console-{name}-files"));
    let tokens = dir.path.join("tokens");
    std::fs::write(&tokens, format!("{READ} read\n{WRITE} write\n")).unwrap();
    let secret = dir.path.join("secret");
    std::fs::write(&secret, "0123456789abcdef0123456789abcdef\n").unwrap();
    let extra = format!(
        "[security]\nauth_method = \"token\"\ntoken_file = \"{}\"\ntokens = [{{ token = \"{ADMIN}\", role = \"admin\" }}]\ncluster_secret_file = \"{}\"\n",
        tokens.display(),
        secret.display()
    );
    (
        Cluster::start_full(name, 3, Bootstrap::Static, &extra, Some(ADMIN)),
        dir,
    )
}

#[test]
fn the_console_shows_members_keys_changes_and_a_member_going_down() {
    let (Some(driver), Some(chromium)) = (
        program("/usr/bin/chromedriver"),
        program("/usr/bin/chromium"),
    ) else {
        eprintln!(
            "skipped: the console's browser test needs /usr/bin/chromium and /usr/bin/chromedriver \
             (as root: apt-get install chromium chromium-driver, or run contrib/check-prereqs.sh)"
        );
        return;
    };
    let (mut c, files) = start_cluster("console");
    let leader = c.wait_leader(Duration::from_secs(30));
    let others: Vec<u64> = c.ids().into_iter().filter(|i| *i != leader).collect();
    // The page is served by one follower; the other follower is killed.
    let (page_node, victim) = (others[0], others[1]);
    let browser = Browser::start(&driver, &chromium, &files.path.join("profile"));
    browser.open(&format!("http://{}/ui", c.addr(page_node)));

    // Without a token nothing is shown, and the page says why.
    let said = browser.wait_for(
        "the refusal of a request without a token",
        "const m = document.getElementById('auth-message');
         return m && !m.hidden ? m.textContent : null;",
        json!([]),
    );
    assert!(
        said.as_str().is_some_and(|s| s.contains("token")),
        "the refusal names what is missing: {said}"
    );
    let rows = browser.run(
        "return document.querySelectorAll('#members tbody tr').length",
        json!([]),
    );
    assert_eq!(rows, json!(0), "members are shown without a token");

    // With a token: every member, and one leader, the right one.
    browser.fill_and_click("token", WRITE, "token-save");
    let members = browser.wait_for(
        "three members, all up, one of them the leader, each with its lag",
        "const rows = [...document.querySelectorAll('#members tbody tr')];
         const up = rows.filter(r => r.dataset.health === 'up');
         const leaders = rows.filter(r => r.classList.contains('leader'));
         if (up.length !== 3 || leaders.length !== 1) return null;
         // The lag behind the leader is known for every member, though a
         // follower serves the page (it comes from the leader's answer).
         if (!rows.every(r => /^[0-9]+$/.test(r.querySelector('td.lag').textContent.trim()))) return null;
         return rows.map(r => [Number(r.dataset.memberId), r.dataset.role, r.classList.contains('leader')]);",
        json!([]),
    );
    let members = members.as_array().expect("rows").clone();
    let ids: BTreeSet<u64> = members.iter().filter_map(|m| m[0].as_u64()).collect();
    assert_eq!(ids, c.ids().into_iter().collect(), "{members:?}");
    for m in &members {
        let is_leader = m[0].as_u64() == Some(leader);
        assert_eq!(m[2], json!(is_leader), "leader marking: {members:?}");
        let role = if is_leader { "leader" } else { "follower" };
        assert_eq!(m[1], json!(role), "{members:?}");
    }

    // A change under the tailed prefix appears in the live tail, and the
    // key in the browser with its value.
    browser.fill_and_click("tail-prefix", "console/", "tail-start");
    browser.wait_for(
        "the live tail watching console/",
        "const s = document.getElementById('tail-status');
         return s && s.textContent.includes('watching') ? s.textContent : null;",
        json!([]),
    );
    let r = c.set_retrying(leader, "console/greeting", "hello from the test");
    assert_eq!(r.status, 200, "{}", r.body);
    let revision = r.json()["revision"].as_u64().expect("a revision");
    let event = browser.wait_for(
        "the write in the live tail",
        "const e = document.querySelector('#tail-events li.event[data-key=\"console/greeting\"]');
         return e ? [e.dataset.type, Number(e.dataset.revision)] : null;",
        json!([]),
    );
    assert_eq!(event, json!(["PUT", revision]));
    browser.fill_and_click("prefix", "console/", "browse");
    browser.wait_for(
        "the key in the key browser",
        "return document.querySelector('#key-list tr[data-key=\"console/greeting\"]') !== null;",
        json!([]),
    );
    browser.run(
        "document.querySelector('#key-list tr[data-key=\"console/greeting\"]').click();",
        json!([]),
    );
    browser.wait_for(
        "the key's value in the detail view",
        "const d = document.getElementById('key-detail');
         return d && d.textContent.includes('hello from the test');",
        json!([]),
    );

    // The load charts draw the serving member's own counts: writes sent to
    // it show as writes per second and in the latency chart, the live
    // tail's events as watch events.
    let mut n = 0;
    let load = eventually(WAIT, || {
        n += 1;
        // A write refused for the moment (503) is sent again next time.
        let r = c.set(page_node, &format!("console/load/{n}"), "x").ok()?;
        if r.status != 200 {
            return None;
        }
        let v = browser.run(
            "const latest = id => Number(document.getElementById(id).dataset.latest || 0);
             return [latest('chart-writes'), latest('chart-p99'), latest('chart-watch')];",
            json!([]),
        );
        let all = v
            .as_array()?
            .iter()
            .all(|x| x.as_f64().is_some_and(|x| x > 0.0));
        all.then_some(v)
    })
    .unwrap_or_else(|| {
        let page = browser.run(
            "return document.getElementById('load').innerText",
            json!([]),
        );
        panic!("the load charts showed no writes, latency or watch events within {WAIT:?}: {page}")
    });
    eprintln!("console: load charts at writes/s, p99 ms, watch events/s = {load}");

    // A member that dies is shown as down; the others stay up.
    c.kill(victim);
    let killed = std::time::Instant::now();
    let row = browser.wait_for(
        "the killed member marked down",
        "const r = document.querySelector(`#members tbody tr[data-member-id=\"${arguments[0]}\"]`);
         return r && r.dataset.health === 'down' ? r.textContent : null;",
        json!([victim]),
    );
    assert!(
        row.as_str().is_some_and(|t| t.contains("down")),
        "the row says down: {row}"
    );
    eprintln!(
        "console: member {victim} shown down {:?} after it was killed",
        killed.elapsed()
    );
    let up = browser.run(
        "return [...document.querySelectorAll('#members tbody tr')]
                .filter(r => r.dataset.health === 'up').map(r => Number(r.dataset.memberId));",
        json!([]),
    );
    let mut expected = vec![leader, page_node];
    expected.sort();
    let mut up: Vec<u64> = up
        .as_array()
        .expect("ids")
        .iter()
        .filter_map(Value::as_u64)
        .collect();
    up.sort();
    assert_eq!(up, expected);

    // A read token sees everything but may not write: the put is refused
    // with the server's reason, and nothing is written.
    let refreshed = |b: &Browser, what: &str| {
        let before = b.run(
            "return document.getElementById('cluster-updated').getAttribute('datetime')",
            json!([]),
        );
        b.wait_for(
            what,
            "const t = document.getElementById('cluster-updated').getAttribute('datetime');
             const rows = document.querySelectorAll('#members tbody tr').length;
             return t && t !== arguments[0] && rows === 3;",
            json!([before]),
        );
    };
    browser.fill_and_click("token", READ, "token-save");
    refreshed(&browser, "the members refreshed with the read token");
    browser.run(
        "document.getElementById('put-key').value = 'console/by-reader';
         document.getElementById('put-value').value = 'x';
         document.getElementById('put').click();",
        json!([]),
    );
    let refusal = browser.wait_for(
        "the refusal of a put with a read token",
        "const e = document.getElementById('keys-error');
         return e && !e.hidden && e.textContent.includes('does not allow') ? e.textContent : null;",
        json!([]),
    );
    assert!(
        refusal.as_str().is_some_and(|t| t.contains("role")),
        "{refusal}"
    );
    let r = c.get(leader, "console/by-reader", "linearizable").unwrap();
    assert_eq!(
        r.json()["value"],
        Value::Null,
        "a read token wrote: {}",
        r.body
    );
    browser.fill_and_click("token", WRITE, "token-save");
    refreshed(&browser, "the members refreshed with the write token");

    // The screenshot is of the whole window, and each section of the page
    // is drawn in it, with a size, without overlapping another.
    let png = browser.screenshot();
    let shot = files.path.join("console.png");
    std::fs::write(&shot, &png).unwrap();
    if let Ok(dir) = std::env::var("FERRIUM_SCREENSHOT_DIR") {
        std::fs::write(Path::new(&dir).join("console.png"), &png).unwrap();
    }
    let (w, h) = png_size(&png).expect("the screenshot is a PNG");
    let inner = browser.run("return [window.innerWidth, window.innerHeight]", json!([]));
    assert_eq!(json!([w, h]), inner, "the screenshot covers the window");
    let boxes = browser.run(
        "return ['cluster','load','keys','tail'].map(id => {
             const e = document.getElementById(id);
             if (!e) return [id, null];
             const b = e.getBoundingClientRect();
             return [id, [b.left, b.top, b.width, b.height]];
         });",
        json!([]),
    );
    let boxes: Vec<(String, [f64; 4])> = boxes
        .as_array()
        .expect("boxes")
        .iter()
        .map(|b| {
            let id = b[0].as_str().unwrap_or("?").to_string();
            let r = b[1]
                .as_array()
                .unwrap_or_else(|| panic!("the page has no section #{id}"));
            let f = |i: usize| r[i].as_f64().unwrap_or(0.0);
            (id, [f(0), f(1), f(2), f(3)])
        })
        .collect();
    for (id, [_, _, bw, bh]) in &boxes {
        assert!(
            *bw > 100.0 && *bh > 50.0,
            "#{id} is drawn too small: {bw}x{bh}"
        );
    }
    for (i, (a, ra)) in boxes.iter().enumerate() {
        for (b, rb) in &boxes[i + 1..] {
            let apart = ra[0] + ra[2] <= rb[0] + 0.5
                || rb[0] + rb[2] <= ra[0] + 0.5
                || ra[1] + ra[3] <= rb[1] + 0.5
                || rb[1] + rb[3] <= ra[1] + 0.5;
            assert!(apart, "#{a} {ra:?} overlaps #{b} {rb:?}");
        }
    }
    eprintln!("console screenshot: {}", shot.display());
}

/// Metric names in `text`: every `ferrium_...` or `process_...`
/// identifier (Prometheus' own `up` is not a node's to export).
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = text.as_bytes();
    let is_name = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let mut i = 0;
    while i < bytes.len() {
        let starts = (i == 0 || !is_name(bytes[i - 1]))
            && (text[i..].starts_with("ferrium_") || text[i..].starts_with("process_"));
        if !starts {
            i += 1;
            continue;
        }
        let end = (i..bytes.len())
            .find(|j| !is_name(bytes[*j]))
            .unwrap_or(bytes.len());
        names.insert(text[i..end].to_string());
        i = end;
    }
    names
}

/// Every series name a node exports, histograms with their `_bucket`,
/// `_sum` and `_count` series.
fn exported(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            let (Some(name), Some(kind)) = (parts.next(), parts.next()) else {
                continue;
            };
            names.insert(name.to_string());
            if kind == "histogram" {
                for s in ["_bucket", "_sum", "_count"] {
                    names.insert(format!("{name}{s}"));
                }
            }
        } else if !line.starts_with('#') {
            let end = line.find(['{', ' ']).unwrap_or(line.len());
            names.insert(line[..end].to_string());
        }
    }
    names
}

#[test]
fn every_metric_the_dashboard_and_the_alerts_name_is_exported() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dashboard = std::fs::read_to_string(root.join("contrib/grafana/ferrium.json")).unwrap();
    let rules = std::fs::read_to_string(root.join("contrib/prometheus/alerts.yml")).unwrap();
    let dash: Value = serde_json::from_str(&dashboard).expect("the dashboard is JSON");
    assert!(
        dash["panels"].as_array().is_some_and(|p| p.len() >= 10),
        "the dashboard has its panels"
    );

    // Backups on, so that their metrics exist; three members, so that the
    // leader reports replication.
    let backups = Scratch::new("console-metrics-backups");
    let extra = format!(
        "[backup]\ndir = \"{}\"\ninterval = \"1h\"\n",
        backups.path.display()
    );
    let c = Cluster::start_in_process("console-metrics", 3, Bootstrap::Static, &extra);
    let leader = c.wait_leader(Duration::from_secs(30));
    assert_eq!(c.set_retrying(leader, "k", "v").status, 200);
    let mut exported_names = BTreeSet::new();
    for id in c.ids() {
        let r = request(
            &c.addr(id),
            "GET",
            "/metrics",
            None,
            &[("Accept", "text/plain;version=0.0.4")],
            Duration::from_secs(10),
        )
        .unwrap();
        assert_eq!(r.status, 200, "{}", r.body);
        exported_names.extend(exported(&r.body));
    }
    for (file, text) in [
        ("contrib/grafana/ferrium.json", &dashboard),
        ("contrib/prometheus/alerts.yml", &rules),
    ] {
        let named = metric_names(text);
        assert!(named.len() >= 10, "{file} names only {named:?}");
        let missing: Vec<_> = named.difference(&exported_names).collect();
        assert!(
            missing.is_empty(),
            "{file} names metrics no node exports: {missing:?}"
        );
    }
}

#[test]
fn promtool_accepts_the_alert_rules_and_each_fires_when_it_should() {
    let Some(promtool) = program("/usr/bin/promtool") else {
        eprintln!(
            "skipped: checking the alert rules needs promtool (as root: apt-get install prometheus, \
             or run contrib/check-prereqs.sh)"
        );
        return;
    };
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for args in [
        vec!["check", "rules", "contrib/prometheus/alerts.yml"],
        vec!["check", "config", "contrib/prometheus/prometheus.yml"],
        // Each alert fires on the series that should raise it, and not on
        // a healthy member's.
        vec!["test", "rules", "contrib/prometheus/alerts_test.yml"],
    ] {
        let out = Command::new(&promtool)
            .args(&args)
            .current_dir(root)
            .output()
            .expect("promtool runs");
        assert!(
            out.status.success(),
            "promtool {} failed:\n{}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
