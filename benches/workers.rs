//! Workers (`--workers N`), measured with real processes:
//!
//! * **throughput** of a single-threaded server (Python's stdlib `http.server`, taking fd 3
//!   under relaunch, binding its own socket alone) run alone and under relaunch with 1, 2 and
//!   4 workers, driven by closed-loop HTTP/1.0 clients (one request per connection);
//! * **memory during a reload**: the sum of PSS (and RSS) of the master and all its
//!   descendants, sampled every 5 ms, before and at the peak of a reload of N workers, with
//!   `--reload-strategy all` against `rolling` (`--max-surge 1`), and the reload's duration.
//!
//! ```text
//! cargo build --release && cargo bench --bench workers -- [--secs S] [--clients C] [--big N]
//! ```
//! `--big N` also measures a reload of N workers (e.g. 64) with each strategy.

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

const SERVER: &str = r#"
import http.server, os, socket, sys
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"
    def do_GET(self):
        body = ("pid=%d" % os.getpid()).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
if os.environ.get("LISTEN_PID") == str(os.getpid()):
    sock = socket.socket(fileno=3)
else:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", int(sys.argv[1])))
    sock.listen(4096)
srv = http.server.HTTPServer(("127.0.0.1", 0), H, bind_and_activate=False)
srv.socket = sock
srv.serve_forever()
"#;

struct Opts {
    secs: u64,
    clients: usize,
    big: Option<usize>,
}

fn main() {
    let mut o = Opts {
        secs: 5,
        clients: 8,
        big: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut num = |what: &str| -> u64 {
            args.next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{what} needs a number"))
        };
        match a.as_str() {
            "--secs" => o.secs = num("--secs"),
            "--clients" => o.clients = num("--clients") as usize,
            "--big" => o.big = Some(num("--big") as usize),
            "--bench" => {}
            other => panic!("unknown argument {other:?} (expected --secs S, --clients C, --big N)"),
        }
    }
    let relaunch = PathBuf::from(env!("CARGO_BIN_EXE_relaunch"));
    let python = python();
    let dir = std::env::temp_dir().join(format!("relaunch-bench-workers-{}", std::process::id()));
    fs::create_dir_all(&dir).unwrap();
    let script = dir.join("server.py");
    fs::write(&script, SERVER).unwrap();
    println!("relaunch: {}", relaunch.display());
    println!("server: {} (single-threaded http.server)", python.display());
    println!(
        "clients: {} closed-loop, one GET per connection; {} s per measurement",
        o.clients, o.secs
    );
    println!("load average before: {}", loadavg());

    println!("\n## Throughput (requests/s)\n");
    println!("| setup | req/s | failed |");
    println!("|---|---|---|");
    let port = free_port();
    let mut alone = Command::new(&python)
        .arg(&script)
        .arg(port.to_string())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    wait_http(addr);
    let (rps, failed) = load(addr, o.clients, o.secs);
    println!("| server alone | {rps:.0} | {failed} |");
    let _ = alone.kill();
    let _ = alone.wait();
    for n in [1, 2, 4] {
        let m = Master::start(&relaunch, &python, &script, &dir, n, "all");
        let (rps, failed) = load(m.addr, o.clients, o.secs);
        println!("| relaunch --workers {n} | {rps:.0} | {failed} |");
    }

    println!("\n## Memory during a reload (PSS/RSS of the master and its descendants, MiB)\n");
    println!("| workers | strategy | before PSS | peak PSS | extra PSS | peak RSS | reload s |");
    println!("|---|---|---|---|---|---|---|");
    let mut sizes = vec![8];
    sizes.extend(o.big);
    for n in sizes {
        for strategy in ["all", "rolling"] {
            let m = Master::start(&relaunch, &python, &script, &dir, n, strategy);
            let before = tree_mem(m.child.id() as i32);
            let stop = Arc::new(AtomicBool::new(false));
            let peak_pss = Arc::new(AtomicU64::new(0));
            let peak_rss = Arc::new(AtomicU64::new(0));
            let sampler = {
                let (stop, pp, pr) = (stop.clone(), peak_pss.clone(), peak_rss.clone());
                let root = m.child.id() as i32;
                thread::spawn(move || {
                    while !stop.load(Ordering::SeqCst) {
                        let (pss, rss) = tree_mem(root);
                        pp.fetch_max(pss, Ordering::SeqCst);
                        pr.fetch_max(rss, Ordering::SeqCst);
                        thread::sleep(Duration::from_millis(5));
                    }
                })
            };
            let t = Instant::now();
            let out = Command::new(&relaunch)
                .args(["reload", "--wait", "--timeout", "600", "--control"])
                .arg(&m.ctl)
                .output()
                .unwrap();
            let took = t.elapsed().as_secs_f64();
            stop.store(true, Ordering::SeqCst);
            sampler.join().unwrap();
            assert!(
                out.status.success(),
                "reload failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let mib = |kb: u64| kb as f64 / 1024.0;
            let (pp, pr) = (
                peak_pss.load(Ordering::SeqCst),
                peak_rss.load(Ordering::SeqCst),
            );
            println!(
                "| {n} | {strategy} | {:.1} | {:.1} | {:.1} | {:.1} | {took:.2} |",
                mib(before.0),
                mib(pp),
                mib(pp.saturating_sub(before.0)),
                mib(pr)
            );
        }
    }
    println!("\nload average after: {}", loadavg());
    let _ = fs::remove_dir_all(&dir);
}

/// The real python3 (not a version manager's shell shim, which would add a process).
fn python() -> PathBuf {
    let out = Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .expect("python3 is needed for this benchmark");
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

fn loadavg() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A relaunch running N python workers; stopped (and waited for) on drop.
struct Master {
    child: Child,
    ctl: PathBuf,
    addr: SocketAddr,
}

impl Master {
    fn start(
        relaunch: &Path,
        python: &Path,
        script: &Path,
        dir: &Path,
        n: usize,
        strategy: &str,
    ) -> Master {
        let ctl = dir.join(format!("ctl-{n}-{strategy}.sock"));
        let port = free_port();
        let child = Command::new(relaunch)
            .args(["--control"])
            .arg(&ctl)
            .args(["--workers", &n.to_string(), "--reload-strategy", strategy])
            .args(["--start-secs", "0.3", "--listen"])
            .arg(format!("127.0.0.1:{port}"))
            .args(["-q", "--"])
            .arg(python)
            .arg(script)
            .arg("0")
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let m = Master { child, ctl, addr };
        wait_http(addr);
        // Up: every worker counted (status exits 0 once RUNNING).
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let ok = Command::new(relaunch)
                .args(["status", "--control"])
                .arg(&m.ctl)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "relaunch --workers {n} did not come up"
            );
            thread::sleep(Duration::from_millis(50));
        }
        m
    }
}

impl Drop for Master {
    fn drop(&mut self) {
        // SIGTERM: relaunch stops every worker and exits.
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

fn wait_http(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while get(addr).is_err() {
        assert!(Instant::now() < deadline, "{addr} never answered");
        thread::sleep(Duration::from_millis(20));
    }
}

fn get(addr: SocketAddr) -> std::io::Result<()> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(b"GET / HTTP/1.0\r\n\r\n")?;
    let mut buf = Vec::with_capacity(256);
    s.read_to_end(&mut buf)?;
    if buf.starts_with(b"HTTP/1.0 200") {
        Ok(())
    } else {
        Err(std::io::Error::other("bad answer"))
    }
}

/// Closed-loop clients for `secs`: (requests per second, failed requests).
fn load(addr: SocketAddr, clients: usize, secs: u64) -> (f64, u64) {
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let end = Instant::now() + Duration::from_secs(secs);
    let threads: Vec<_> = (0..clients)
        .map(|_| {
            let (ok, failed) = (ok.clone(), failed.clone());
            thread::spawn(move || {
                while Instant::now() < end {
                    match get(addr) {
                        Ok(()) => ok.fetch_add(1, Ordering::Relaxed),
                        Err(_) => failed.fetch_add(1, Ordering::Relaxed),
                    };
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    (
        ok.load(Ordering::SeqCst) as f64 / secs as f64,
        failed.load(Ordering::SeqCst),
    )
}

/// Sum of (PSS, RSS) in KiB of `root` and all its descendants.
fn tree_mem(root: i32) -> (u64, u64) {
    let mut parents = Vec::new();
    if let Ok(dir) = fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            let Some(rest) = stat.rfind(')').map(|i| &stat[i + 2..]) else {
                continue;
            };
            let ppid = rest
                .split_whitespace()
                .nth(1)
                .and_then(|p| p.parse::<i32>().ok())
                .unwrap_or(0);
            parents.push((pid, ppid));
        }
    }
    let mut tree = vec![root];
    let mut i = 0;
    while i < tree.len() {
        let p = tree[i];
        tree.extend(parents.iter().filter(|(_, pp)| *pp == p).map(|(c, _)| *c));
        i += 1;
    }
    let (mut pss, mut rss) = (0, 0);
    for pid in tree {
        if let Ok(s) = fs::read_to_string(format!("/proc/{pid}/smaps_rollup")) {
            for line in s.lines() {
                let kb = |l: &str| {
                    l.split_whitespace()
                        .nth(1)
                        .and_then(|v| v.parse::<u64>().ok())
                        .unwrap_or(0)
                };
                if line.starts_with("Pss:") {
                    pss += kb(line);
                } else if line.starts_with("Rss:") {
                    rss += kb(line);
                }
            }
        }
    }
    (pss, rss)
}
