//! What the benchmark reloads: relaunch, the example server on its own (the baseline, never
//! reloaded), and the peers (the naive stop-and-start, systemfd + a restarter, circus,
//! gunicorn, socketmaster, einhorn). Each one is started fresh per run, serves `GET /` with a body `pid=N ...`, and
//! reloads on request; every process is killed when the [`Target`] is dropped.

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};

use crate::load::{self, Load};
use crate::procs::{self, Proc, Stamp};

/// The tiny WSGI app gunicorn serves (gunicorn cannot run the Rust example).
const GUNICORN_APP: &str = include_str!("peers/gunicorn_app.py");

/// Which server setup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// relaunch running `hello`.
    Relaunch,
    /// `hello --bind`, no master, never reloaded: the throughput baseline.
    Baseline,
    /// `hello --bind`, reloaded by stopping it and starting a new one.
    Naive,
    /// `systemfd --no-pid` holding the socket, a restarter under it that stops and starts
    /// `hello` on SIGHUP (what cargo-watch/watchexec do on a change). With its default listen
    /// backlog of 1.
    Systemfd,
    /// The same with `systemfd --backlog 4096`.
    SystemfdBacklog,
    /// circusd with a `[socket:web]`, `hello --fd $(circus.sockets.web)`, graceful reload on
    /// SIGHUP.
    Circus,
    /// gunicorn (one gthread worker) serving a trivial WSGI app, `kill -HUP`.
    Gunicorn,
    /// socketmaster (Go) holding the socket and running `hello --fd 3`; on SIGHUP it starts a
    /// new one, sleeps its `-start` timer, then sends SIGTERM to the old one.
    Socketmaster,
    /// einhorn (Ruby) with `-b` and a timer ACK (`-m SECS`), running
    /// `hello --fd $EINHORN_FD_0`; on SIGHUP it re-executes itself, starts a new worker,
    /// waits for the ACK, then sends the old one SIGUSR2.
    Einhorn,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Relaunch => "relaunch",
            Kind::Baseline => "baseline",
            Kind::Naive => "naive",
            Kind::Systemfd => "systemfd",
            Kind::SystemfdBacklog => "systemfd-backlog",
            Kind::Circus => "circus",
            Kind::Gunicorn => "gunicorn",
            Kind::Socketmaster => "socketmaster",
            Kind::Einhorn => "einhorn",
        }
    }

    pub fn parse_peer(s: &str) -> Result<Kind> {
        Ok(match s {
            "naive" => Kind::Naive,
            "systemfd" => Kind::Systemfd,
            "systemfd-backlog" => Kind::SystemfdBacklog,
            "circus" => Kind::Circus,
            "gunicorn" => Kind::Gunicorn,
            "socketmaster" => Kind::Socketmaster,
            "einhorn" => Kind::Einhorn,
            other => bail!(
                "unknown peer {other:?} (known: naive, systemfd, systemfd-backlog, circus, \
                 gunicorn, socketmaster, einhorn)"
            ),
        })
    }

    /// Why this peer cannot run here (a program or a source tree is missing), with how to
    /// provide it.
    pub fn missing(self, settings: &Settings) -> Option<String> {
        let (program, install) = match self {
            Kind::Socketmaster => {
                return settings.socketmaster.as_ref().err().cloned();
            }
            Kind::Einhorn => {
                return settings.einhorn.as_ref().err().cloned();
            }
            Kind::Systemfd | Kind::SystemfdBacklog => ("systemfd", "cargo install systemfd"),
            Kind::Circus => ("circusd", "pip install circus"),
            Kind::Gunicorn => ("gunicorn", "pip install gunicorn"),
            _ => return None,
        };
        procs::which(program)
            .is_none()
            .then(|| format!("`{program}` is not in PATH (install it with `{install}`)"))
    }
}

/// Everything needed to start targets.
#[derive(Debug, Clone)]
pub struct Settings {
    pub relaunch: PathBuf,
    pub hello: PathBuf,
    /// This benchmark's own executable (it is also the restarter under systemfd).
    pub bench_exe: PathBuf,
    /// relaunch `--start-secs`.
    pub start_secs: String,
    /// relaunch `--ready MODE`, if set.
    pub ready: Option<String>,
    /// Extra relaunch arguments.
    pub relaunch_args: Vec<String>,
    /// Extra hello arguments.
    pub hello_args: Vec<String>,
    /// Where logs, stamp files and peer configs go.
    pub work: PathBuf,
    /// The socketmaster executable built from its source, or why there is none.
    pub socketmaster: Result<PathBuf, String>,
    /// `ruby` and einhorn's source tree, or why there are none.
    pub einhorn: Result<(PathBuf, PathBuf), String>,
}

impl Settings {
    /// The peers' timer (socketmaster `-start`, einhorn `-m`): relaunch's `--start-secs`, so
    /// that every timer-based tool waits as long for the new server.
    pub fn timer_ms(&self) -> u64 {
        crate::parse_secs(&self.start_secs).map_or(500, |s| (s * 1000.0).round() as u64)
    }

    /// The spawn-latency floor on this machine right now: time from asking std (which uses
    /// `posix_spawn`, i.e. `vfork` + `exec`) to start `hello --stamp-file` until hello's `main`.
    /// hello then exits at once, as it gets no socket.
    pub fn exec_floor(&self, tag: &str) -> Result<Option<Duration>> {
        let stamps = self.work.join(format!("{tag}.floor"));
        let _ = fs::remove_file(&stamps);
        let mut cmd = Command::new(&self.hello);
        cmd.arg("--stamp-file")
            .arg(&stamps)
            .env_remove("LISTEN_FDS")
            .env_remove("LISTEN_PID")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        let t0 = procs::monotonic_ns();
        cmd.status().context("running hello for the exec floor")?;
        let text = fs::read_to_string(&stamps).unwrap_or_default();
        let ns: Option<i128> = text
            .lines()
            .find_map(|l| field(l, "monotonic_ns")?.parse().ok());
        Ok(ns.and_then(|ns| u64::try_from(ns - t0).ok().map(Duration::from_nanos)))
    }
}

/// One reload, as measured.
#[derive(Debug, Clone)]
pub struct Reload {
    pub hup: Stamp,
    /// relaunch only: HUP → the `reload complete` line (the old child is signalled then),
    /// from relaunch's own log timestamp.
    pub complete: Option<Duration>,
    /// HUP → the old server process(es) exited and a new one has answered.
    pub window: Duration,
    /// HUP → the new server process's `main` (from its stamp file), if it wrote one.
    pub spawn_latency: Option<Duration>,
    /// Why the reload failed, if it did.
    pub failed: Option<String>,
    /// What an old server that took over [`SLOW_STOP`] to exit was doing then.
    pub note: Option<String>,
}

/// An old server still running this long after it was asked to stop gets diagnosed.
pub const SLOW_STOP: Duration = Duration::from_secs(2);

/// A running target.
pub struct Target {
    pub kind: Kind,
    pub addr: SocketAddr,
    /// The processes, outermost first (dropping them kills their trees).
    procs: Vec<Proc>,
    /// Pid whose resource use is reported (the master), if the setup has one.
    master: Option<i32>,
    /// Pid that gets SIGHUP.
    reload_pid: i32,
    /// Pid whose children are the server processes.
    server_parent: i32,
    stamps: PathBuf,
    settings: Settings,
    log: PathBuf,
    /// Startup delay used for this instance.
    delay_ms: u64,
}

impl Target {
    /// Starts `kind` with the given startup delay for its server; returns once it answers.
    pub fn start(kind: Kind, settings: &Settings, delay_ms: u64, tag: &str) -> Result<Target> {
        let log = settings.work.join(format!("{tag}.log"));
        let stamps = settings.work.join(format!("{tag}.stamps"));
        let _ = fs::remove_file(&log);
        let _ = fs::remove_file(&stamps);
        let deadline = Instant::now() + Duration::from_secs(60);
        let hello_args = |extra: &[String]| -> Vec<String> {
            let mut args = extra.to_vec();
            args.extend(settings.hello_args.iter().cloned());
            args.extend([
                "--startup-delay-ms".into(),
                delay_ms.to_string(),
                "--stamp-file".into(),
                stamps.display().to_string(),
            ]);
            args
        };
        let mut target = match kind {
            Kind::Relaunch => {
                let mut cmd = Command::new(&settings.relaunch);
                cmd.args([
                    "--listen",
                    "127.0.0.1:0",
                    "--start-secs",
                    &settings.start_secs,
                ]);
                if let Some(mode) = &settings.ready {
                    cmd.args(["--ready", mode]);
                }
                cmd.args(&settings.relaunch_args)
                    .arg("--")
                    .arg(&settings.hello)
                    .args(hello_args(&[]))
                    .env("RELAUNCH_LOG", "info");
                let mut p = Proc::spawn(kind.name(), cmd, &log)?;
                let (_, line) = p.wait_line(0, deadline, "the `listening` line", |l| {
                    is_event(l, "listening")
                })?;
                let addr = field(&line.text, "addr")
                    .ok_or_else(|| anyhow!("no addr= in {:?}", line.text))?
                    .parse()
                    .with_context(|| format!("bad addr= in {:?}", line.text))?;
                let pid = p.pid();
                Target::new(
                    kind,
                    addr,
                    vec![p],
                    Some(pid),
                    pid,
                    pid,
                    stamps,
                    settings,
                    log,
                )
            }
            Kind::Baseline | Kind::Naive => {
                let (p, addr) = start_hello_bind(settings, "127.0.0.1:0", &hello_args, &log)?;
                let pid = p.pid();
                Target::new(kind, addr, vec![p], None, pid, pid, stamps, settings, log)
            }
            Kind::Systemfd | Kind::SystemfdBacklog => {
                let port = procs::free_port()?;
                let mut cmd = Command::new(procs::which("systemfd").expect("checked"));
                if kind == Kind::SystemfdBacklog {
                    cmd.args(["--backlog", "4096"]);
                }
                cmd.args(["--no-pid", "-s", &format!("http::127.0.0.1:{port}"), "--"])
                    .arg(&settings.bench_exe)
                    .args(["--restarter", "--"])
                    .arg(&settings.hello)
                    .args(hello_args(&[]));
                // systemfd binds, then *execs* the command: the process that holds the socket
                // from then on is the restarter (cargo-watch in real use), not systemfd. Its
                // footprint is the restarter's, so no master is reported.
                let p = Proc::spawn(kind.name(), cmd, &log)?;
                let pid = p.pid();
                let addr = SocketAddr::from(([127, 0, 0, 1], port));
                Target::new(kind, addr, vec![p], None, pid, pid, stamps, settings, log)
            }
            Kind::Circus => {
                let port = procs::free_port()?;
                let dir = &settings.work;
                let config = dir.join(format!("{tag}-circus.ini"));
                let args = hello_args(&["--fd".into(), "$(circus.sockets.web)".into()]);
                fs::write(
                    &config,
                    format!(
                        "[circus]\n\
                         endpoint = ipc://{ctl}\n\
                         pubsub_endpoint = ipc://{pubsub}\n\
                         statsd = False\n\
                         \n\
                         [watcher:hello]\n\
                         cmd = {hello}\n\
                         args = {args}\n\
                         use_sockets = True\n\
                         numprocesses = 1\n\
                         stop_signal = TERM\n\
                         graceful_timeout = 10\n\
                         copy_env = True\n\
                         \n\
                         [socket:web]\n\
                         host = 127.0.0.1\n\
                         port = {port}\n",
                        ctl = dir.join(format!("{tag}-ctl.sock")).display(),
                        pubsub = dir.join(format!("{tag}-pubsub.sock")).display(),
                        hello = settings.hello.display(),
                        args = args.join(" "),
                    ),
                )?;
                let mut cmd = Command::new(procs::which("circusd").expect("checked"));
                cmd.arg(&config);
                let p = Proc::spawn(kind.name(), cmd, &log)?;
                let pid = p.pid();
                let addr = SocketAddr::from(([127, 0, 0, 1], port));
                Target::new(
                    kind,
                    addr,
                    vec![p],
                    Some(pid),
                    pid,
                    pid,
                    stamps,
                    settings,
                    log,
                )
            }
            Kind::Gunicorn => {
                let port = procs::free_port()?;
                let app_dir = settings.work.join(format!("{tag}-app"));
                fs::create_dir_all(&app_dir)?;
                fs::write(app_dir.join("bench_app.py"), GUNICORN_APP)?;
                let mut cmd = Command::new(procs::which("gunicorn").expect("checked"));
                cmd.args([
                    "--bind",
                    &format!("127.0.0.1:{port}"),
                    "--workers",
                    "1",
                    "--worker-class",
                    "gthread",
                    "--threads",
                    "16",
                    "--graceful-timeout",
                    "10",
                    "--chdir",
                ])
                .arg(&app_dir)
                .arg("bench_app:app")
                .env("BENCH_STARTUP_DELAY_MS", delay_ms.to_string())
                .env("BENCH_STAMP_FILE", &stamps);
                let p = Proc::spawn(kind.name(), cmd, &log)?;
                let pid = p.pid();
                let addr = SocketAddr::from(([127, 0, 0, 1], port));
                Target::new(
                    kind,
                    addr,
                    vec![p],
                    Some(pid),
                    pid,
                    pid,
                    stamps,
                    settings,
                    log,
                )
            }
            Kind::Socketmaster => {
                let port = procs::free_port()?;
                let exe = settings.socketmaster.as_ref().map_err(|e| anyhow!("{e}"))?;
                // socketmaster passes the socket as fd 3 (and sets EINHORN_FDS=3); `-start` is
                // its timer: how long the new process gets before the old one is stopped.
                let mut cmd = Command::new(exe);
                cmd.args([
                    "-listen".to_owned(),
                    format!("tcp://127.0.0.1:{port}"),
                    "-start".to_owned(),
                    settings.timer_ms().to_string(),
                    "-command".to_owned(),
                    settings.hello.display().to_string(),
                    "--".to_owned(),
                ])
                .args(hello_args(&["--fd".into(), "3".into()]));
                let p = Proc::spawn(kind.name(), cmd, &log)?;
                let pid = p.pid();
                let addr = SocketAddr::from(([127, 0, 0, 1], port));
                Target::new(
                    kind,
                    addr,
                    vec![p],
                    Some(pid),
                    pid,
                    pid,
                    stamps,
                    settings,
                    log,
                )
            }
            Kind::Einhorn => {
                let port = procs::free_port()?;
                let (ruby, src) = settings.einhorn.as_ref().map_err(|e| anyhow!("{e}"))?;
                let dir = settings.work.join(format!("{tag}-einhorn"));
                fs::create_dir_all(&dir)?;
                // The worker gets the socket's fd number in EINHORN_FD_0; a shell passes it to
                // hello's --fd and execs it (the worker keeps the shell's pid).
                // RUBYLIB rather than `-I`: einhorn re-executes itself on SIGHUP with its own
                // argv, which would lose a `-I`.
                let mut cmd = Command::new(ruby);
                cmd.env("RUBYLIB", src.join("lib"))
                    .arg(src.join("bin/einhorn"))
                    .args(["-b", &format!("127.0.0.1:{port},r")])
                    .args(["-m", &format!("{:.3}", settings.timer_ms() as f64 / 1000.0)])
                    .args(["-n", "1"])
                    // Its command socket and lock file in our work dir, not the shared /tmp.
                    .arg("-d")
                    .arg(dir.join("einhorn.sock"))
                    .arg("-f")
                    .arg(dir.join("einhorn.lock"))
                    .arg("-e")
                    .arg(dir.join("einhorn.pid"))
                    .args([
                        "--",
                        "/bin/sh",
                        "-c",
                        "exec \"$0\" --fd \"$EINHORN_FD_0\" \"$@\"",
                    ])
                    .arg(&settings.hello)
                    .args(hello_args(&[]));
                let p = Proc::spawn(kind.name(), cmd, &log)?;
                let pid = p.pid();
                let addr = SocketAddr::from(([127, 0, 0, 1], port));
                Target::new(
                    kind,
                    addr,
                    vec![p],
                    Some(pid),
                    pid,
                    pid,
                    stamps,
                    settings,
                    log,
                )
            }
        };
        target.delay_ms = delay_ms;
        target.wait_serving(deadline)?;
        Ok(target)
    }

    #[allow(clippy::too_many_arguments)]
    fn new(
        kind: Kind,
        addr: SocketAddr,
        procs: Vec<Proc>,
        master: Option<i32>,
        reload_pid: i32,
        server_parent: i32,
        stamps: PathBuf,
        settings: &Settings,
        log: PathBuf,
    ) -> Target {
        Target {
            kind,
            addr,
            procs,
            master,
            reload_pid,
            server_parent,
            stamps,
            settings: settings.clone(),
            log,
            delay_ms: 0,
        }
    }

    /// The log file with everything the target's processes printed.
    pub fn log(&self) -> &Path {
        &self.log
    }

    /// Pid of the master process, if the setup has one.
    pub fn master(&self) -> Option<i32> {
        self.master
    }

    /// Waits until a `GET /` is answered.
    pub fn wait_serving(&mut self, deadline: Instant) -> Result<u32> {
        let addr = self.addr;
        let mut last = String::new();
        let result = procs::wait_for(
            deadline,
            Duration::from_millis(20),
            &format!("{} to answer on {addr}", self.kind.name()),
            || {
                for p in &mut self.procs {
                    if let Some(status) = p.try_wait()? {
                        bail!(
                            "{} exited ({status}) before it served; output:\n{}",
                            p.name,
                            p.tail(20)
                        );
                    }
                }
                match load::probe(addr, Duration::from_secs(5)) {
                    Ok(pid) => Ok(Some(pid)),
                    Err(e) => {
                        last = e;
                        Ok(None)
                    }
                }
            },
        );
        result.with_context(|| format!("last attempt: {last}"))
    }

    /// Server processes (live children of the process that owns them).
    pub fn server_pids(&self) -> Vec<u32> {
        match self.kind {
            Kind::Naive | Kind::Baseline => vec![self.procs[0].pid() as u32],
            _ => procs::live_children(self.server_parent)
                .into_iter()
                .map(|p| p as u32)
                .collect(),
        }
    }

    /// Reloads once and waits (until `deadline`) for the reload to finish: the old server
    /// process(es) exited and a new one answered some client of `load`. Without a load (only
    /// for relaunch), the reload is done when the old generation exited.
    pub fn reload(&mut self, load: Option<&Load>, deadline: Instant) -> Result<Reload> {
        match (self.kind, load) {
            (Kind::Relaunch, _) => self.reload_relaunch(load, deadline),
            (Kind::Baseline, _) => bail!("the baseline is never reloaded"),
            (_, None) => bail!("{} can only be reloaded under load", self.kind.name()),
            (Kind::Naive, Some(load)) => self.reload_naive(load, deadline),
            (_, Some(load)) => self.reload_peer(load, deadline),
        }
    }

    fn reload_relaunch(&mut self, load: Option<&Load>, deadline: Instant) -> Result<Reload> {
        let p = &mut self.procs[0];
        let from = p.line_count();
        let mark = load.map(Load::mark);
        let hup = procs::signal_stamped(p.pid(), libc::SIGHUP)?;
        let (_, line) = p.wait_line(
            from,
            deadline,
            "`reload complete` or `reload failed`",
            |l| is_event(l, "reload complete") || is_event(l, "reload failed"),
        )?;
        let since_hup = |text: &str| -> Result<Duration> {
            let wall = log_time(text).ok_or_else(|| anyhow!("no timestamp in {text:?}"))?;
            Ok(wall.duration_since(hup.wall).unwrap_or_default())
        };
        if is_event(&line.text, "reload failed") {
            return Ok(Reload {
                hup,
                complete: None,
                window: line.at - hup.at,
                spawn_latency: None,
                failed: Some(line.text),
                note: None,
            });
        }
        let complete = since_hup(&line.text)?;
        let new_pid: u32 = field(&line.text, "pid")
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| anyhow!("no pid= in {:?}", line.text))?;
        let old_pid = field(&line.text, "old_pid")
            .ok_or_else(|| anyhow!("no old_pid= in {:?}", line.text))?
            .to_owned();
        let is_exit = |l: &str| is_event(l, "exited") && field(l, "pid") == Some(old_pid.as_str());
        let mut note = None;
        let slow = Instant::now() + SLOW_STOP;
        if p.wait_line_until(from, slow.min(deadline), is_exit)
            .is_none()
        {
            if let Ok(pid) = old_pid.parse() {
                note = Some(procs::diagnose(pid));
            }
        }
        let (_, exited) = p.wait_line(from, deadline, "the old generation to exit", is_exit)?;
        let mut window = since_hup(&exited.text)?;
        if let (Some(load), Some(mark)) = (load, &mark) {
            if !load.served_by_since(new_pid, mark) {
                procs::wait_for(
                    deadline,
                    Duration::from_millis(1),
                    "the new generation to answer a client",
                    || Ok(load.served_by_since(new_pid, mark).then_some(())),
                )?;
                window = window.max(hup.at.elapsed());
            }
        }
        Ok(Reload {
            hup,
            complete: Some(complete),
            window,
            spawn_latency: self.spawn_latency(new_pid, &hup),
            failed: None,
            note,
        })
    }

    fn reload_naive(&mut self, load: &Load, deadline: Instant) -> Result<Reload> {
        let mark = load.mark();
        let hup = Stamp::now();
        self.procs[0].signal(libc::SIGTERM)?;
        let old = self.procs[0].pid();
        let mut note = None;
        procs::wait_for(
            deadline,
            Duration::from_micros(500),
            "the old server to exit",
            || {
                if note.is_none() && hup.at.elapsed() > SLOW_STOP {
                    note = Some(procs::diagnose(old));
                }
                Ok(self.procs[0].try_wait()?.map(|_| ()))
            },
        )?;
        let port = self.addr.port();
        let delay = self.delay_ms;
        let stamps = self.stamps.display().to_string();
        let hello_extra = self.settings.hello_args.clone();
        let (p, _) = start_hello_bind(
            &self.settings,
            &format!("127.0.0.1:{port}"),
            &|extra: &[String]| {
                let mut args = extra.to_vec();
                args.extend(hello_extra.iter().cloned());
                args.extend([
                    "--startup-delay-ms".into(),
                    delay.to_string(),
                    "--stamp-file".into(),
                    stamps.clone(),
                ]);
                args
            },
            &self.log,
        )?;
        let new_pid = p.pid() as u32;
        // The old Proc is dropped here (it has exited; nothing is left to kill).
        self.procs[0] = p;
        self.reload_pid = new_pid as i32;
        self.server_parent = new_pid as i32;
        procs::wait_for(
            deadline,
            Duration::from_millis(1),
            "the new server to answer a client",
            || Ok(load.served_by_since(new_pid, &mark).then_some(())),
        )?;
        Ok(Reload {
            hup,
            complete: None,
            window: hup.at.elapsed(),
            spawn_latency: self.spawn_latency(new_pid, &hup),
            failed: None,
            note,
        })
    }

    fn reload_peer(&mut self, load: &Load, deadline: Instant) -> Result<Reload> {
        let old = self.server_pids();
        if old.is_empty() {
            bail!("{}: no server process to reload", self.kind.name());
        }
        let mark = load.mark();
        let hup = procs::signal_stamped(self.reload_pid, libc::SIGHUP)?;
        let what = format!(
            "{}: old server(s) {old:?} to exit and a new one to answer",
            self.kind.name()
        );
        let mut note: Option<String> = None;
        let new_pid = procs::wait_for(deadline, Duration::from_millis(1), &what, || {
            if note.is_none() && hup.at.elapsed() > SLOW_STOP {
                let notes: Vec<String> = old
                    .iter()
                    .filter(|&&pid| procs::alive(pid as i32))
                    .map(|&pid| procs::diagnose(pid as i32))
                    .collect();
                note = Some(if notes.is_empty() {
                    format!(
                        "old server(s) gone; new server(s): {}",
                        self.server_pids()
                            .iter()
                            .map(|&pid| procs::diagnose(pid as i32))
                            .collect::<Vec<_>>()
                            .join(" / ")
                    )
                } else {
                    notes.join(" / ")
                });
            }
            for p in &mut self.procs {
                if let Some(status) = p.try_wait()? {
                    bail!("{} exited ({status}); output:\n{}", p.name, p.tail(20));
                }
            }
            if old.iter().any(|&pid| procs::alive(pid as i32)) {
                return Ok(None);
            }
            // The new server: a child that was not there before the HUP (pids are not reused
            // within a reload: Linux hands them out cyclically).
            let new = self
                .server_pids()
                .into_iter()
                .find(|pid| !old.contains(pid));
            Ok(new.filter(|&pid| load.served_by_since(pid, &mark)))
        })?;
        Ok(Reload {
            hup,
            complete: None,
            window: hup.at.elapsed(),
            spawn_latency: self.spawn_latency(new_pid, &hup),
            failed: None,
            note,
        })
    }

    /// HUP → `main` of `pid`, from the stamp file.
    fn spawn_latency(&self, pid: u32, hup: &Stamp) -> Option<Duration> {
        let text = fs::read_to_string(&self.stamps).ok()?;
        // The last stamp of that pid: an earlier process may have had the same pid.
        let ns: i128 = text.lines().rev().find_map(|l| {
            (field(l, "pid")?.parse::<u32>().ok()? == pid)
                .then(|| field(l, "monotonic_ns")?.parse().ok())
                .flatten()
        })?;
        let delta = ns - hup.mono_ns;
        (delta >= 0).then(|| Duration::from_nanos(delta as u64))
    }

    /// Stops the target gracefully (SIGTERM to the outermost process), then kills what is left.
    pub fn shutdown(mut self) -> Result<()> {
        for p in self.procs.drain(..) {
            p.stop(libc::SIGTERM, Duration::from_secs(10))?;
        }
        Ok(())
    }
}

/// Starts `hello --bind ADDR ...`; returns it with the address it serves on.
fn start_hello_bind(
    settings: &Settings,
    bind: &str,
    hello_args: &dyn Fn(&[String]) -> Vec<String>,
    log: &Path,
) -> Result<(Proc, SocketAddr)> {
    let mut cmd = Command::new(&settings.hello);
    cmd.args(hello_args(&["--bind".into(), bind.into()]));
    let mut p = Proc::spawn("hello", cmd, log)?;
    let addr = if bind.ends_with(":0") {
        // `hello: pid N serving on 127.0.0.1:PORT` (after the startup delay).
        let deadline = Instant::now() + Duration::from_secs(60);
        let (_, line) = p.wait_line(0, deadline, "`serving on`", |l| l.contains(" serving on "))?;
        line.text
            .rsplit(' ')
            .next()
            .and_then(|a| a.parse().ok())
            .ok_or_else(|| anyhow!("no address in {:?}", line.text))?
    } else {
        bind.parse()?
    };
    Ok((p, addr))
}

// ---------------------------------------------------------------------------------------------
// relaunch's log lines: `2026-11-21T23:18:39.625681Z  INFO reload complete generation=2 ...`

/// True if `line` is a relaunch log line whose message starts with `msg`.
pub fn is_event(line: &str, msg: &str) -> bool {
    let mut tokens = line.split_whitespace();
    if !tokens
        .by_ref()
        .any(|t| matches!(t, "TRACE" | "DEBUG" | "INFO" | "WARN" | "ERROR"))
    {
        return false;
    }
    let rest: Vec<&str> = tokens.collect();
    let want: Vec<&str> = msg.split_whitespace().collect();
    rest.len() >= want.len() && rest[..want.len()] == want[..]
}

/// The value of `key=value` in a line.
pub fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split_whitespace()
        .find_map(|t| t.strip_prefix(key)?.strip_prefix('='))
}

/// The RFC 3339 UTC timestamp at the start of a relaunch log line, as a `SystemTime`.
pub fn log_time(line: &str) -> Option<SystemTime> {
    let ts = line.split_whitespace().next()?.strip_suffix('Z')?;
    let (date, time) = ts.split_once('T')?;
    let mut d = date.split('-').map(|v| v.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let mut t = time.split(':');
    let (h, min) = (
        t.next()?.parse::<i64>().ok()?,
        t.next()?.parse::<i64>().ok()?,
    );
    let sec = t.next()?;
    let (whole, frac) = sec.split_once('.').unwrap_or((sec, "0"));
    let s: i64 = whole.parse().ok()?;
    let mut nanos: u64 = frac.parse().ok()?;
    for _ in frac.len()..9 {
        nanos *= 10;
    }
    let days = days_from_civil(y, m, day);
    let secs = days * 86_400 + h * 3600 + min * 60 + s;
    Some(UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).ok()?) + Duration::from_nanos(nanos))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}
