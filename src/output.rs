//! Capturing the children's stdout and stderr into log files with size rotation
//! (`--stdout-log`, `--stderr-log`, `--redirect-stderr`, `--log-max-bytes`, `--log-backups`,
//! `--log-prefix`).
//!
//! With `--output capture` (the default) or a log file, each child gets its own pipe per
//! captured stream (`Output::pipes_for_child`); lines of a stream without a log file are
//! forwarded to relaunch's own stdout or stderr. With `--output inherit` and no log file,
//! children inherit relaunch's stdout and stderr directly and nothing here is involved (the
//! cheapest path, see BENCHMARKS.md; failure reports then carry no output).
//!
//! Whatever a pipe carries, the last lines of each generation are also kept in memory (at
//! most [`TAIL_LINES`] lines and [`TAIL_BYTES`] bytes per generation, stdout and stderr
//! together, for the last [`TAIL_GENERATIONS`] generations), so that a failed reload or start
//! can say what the child said before it died (`Output::tail`).
//! The write end is the child's fd 1 or 2 and is closed in the master right after the spawn, so
//! end-of-file on the read end means the child *and all its descendants* closed it. The read
//! ends are close-on-exec and non-blocking, and are polled by the master's one event loop like
//! every other fd:
//!
//! - **Line-atomic.** Bytes are cut into lines per pipe; only whole lines are written, so lines
//!   of two overlapping generations interleave but never mix. A partial line waits in its
//!   pipe's buffer until its newline arrives, or is written (with a newline added) when the
//!   pipe closes or relaunch exits. A line longer than [`LINE_MAX`] (64 KiB) is cut into pieces
//!   of that size, each written as a line, as journald does with its `LineMax=`: this bounds the
//!   buffer per pipe.
//! - **Bounded work per wake-up.** At most [`READ_CHUNK`] bytes are read from each pipe per
//!   pass of the event loop, so a child that writes as fast as it can never starves signals,
//!   reloads or the other pipes; it is slowed down by the full pipe (back-pressure, as under
//!   journald or Docker), and nothing it wrote is dropped.
//! - **Dropped output is counted.** If a log file cannot be written (disk full, file system
//!   gone, unwritable after a reopen), the lines are dropped rather than stalling the master:
//!   one warning when it starts, and one with the number of bytes lost once writing works again
//!   (or at exit).
//! - **Rotation only at line boundaries**, like supervisord's: before a line that would take
//!   the file past `--log-max-bytes`, `FILE.N-1` → `FILE.N`, …, `FILE` → `FILE.1`, and a new
//!   `FILE` is opened. A file never exceeds the limit, except one that holds a single line
//!   longer than it. The size is taken from the file itself (`fstat`) before each batch, so an
//!   external truncation (logrotate's `copytruncate`) is noticed. `--log-max-bytes 0` never
//!   rotates; `--log-backups 0` truncates instead of keeping backups.
//! - **Reopen on SIGUSR1** (only when capturing; otherwise USR1 is forwarded to the child): the
//!   files are closed and opened again at their paths, so after an external `mv` a new file is
//!   created (logrotate's `create` mode with a `postrotate` of `kill -USR1`).
//! - **Forwarding** to relaunch's own stdout or stderr writes whole lines with `write(2)`,
//!   like relaunch's own log lines on the same fd: a reader that stops reading stalls it as it
//!   stalls relaunch's logging. Lines of one stream keep their order; lines that a child writes
//!   to stdout and stderr within one wake-up of the loop may come out stream by stream (as
//!   with every pipe-based capture), never mixed within a line.
//! - **`--log-prefix`** starts every line with `[GENERATION PID] ` of the child whose pipe it
//!   came from (a descendant's lines carry the pid of the generation's child), so the two
//!   generations of a reload can be told apart. With several programs the program's name comes
//!   first: `[NAME GENERATION PID] `.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::unistd::Pid;
use tracing::{debug, warn};

use crate::poll::Polled;

/// The longest line kept whole; longer ones are cut into pieces of this size.
pub const LINE_MAX: usize = 64 * 1024;
/// The most read from one pipe per pass of the event loop.
pub const READ_CHUNK: usize = 64 * 1024;
/// Default of `--log-max-bytes`: 50 MiB, as supervisord's `logfile_maxbytes`.
pub const DEFAULT_MAX_BYTES: u64 = 50 * 1024 * 1024;
/// Default of `--log-backups`, as supervisord's `logfile_backups`.
pub const DEFAULT_BACKUPS: u32 = 10;
/// The capacity asked for each output pipe (Linux's default is 64 KiB). A child writing as
/// fast as it can fills a pipe, then sleeps until the master has been scheduled and read it:
/// a larger pipe lets it run ahead longer, so the extra hop through the master costs fewer
/// wake-ups (BENCHMARKS.md, "Output capture cost"). Kept at 256 KiB, well under an unprivileged
/// user's pipe budget (`/proc/sys/fs/pipe-user-pages-soft`, 64 MiB by default); if the kernel
/// refuses it, the pipe keeps its default size.
const PIPE_BYTES: i32 = 256 * 1024;
/// At exit, the most read from each pipe before giving up on a writer that never stops.
const FINAL_DRAIN: usize = 16 * READ_CHUNK;
/// How often writing to a failing file (or reopening it) is retried.
const RETRY_EVERY: Duration = Duration::from_secs(1);

/// The most lines kept per generation for failure reports.
pub const TAIL_LINES: usize = 20;
/// The most bytes kept per generation for failure reports (lines longer are cut).
pub const TAIL_BYTES: usize = 4096;
/// How many generations' tails are kept.
pub const TAIL_GENERATIONS: usize = 8;

/// Whether the children's stdout and stderr pass through relaunch (`--output`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputMode {
    /// Pipes read by relaunch: lines are forwarded to relaunch's stdout and stderr (or the log
    /// files), and the last ones of each generation are kept for failure reports.
    Capture,
    /// The children inherit relaunch's stdout and stderr (streams without a log file).
    Inherit,
}

impl std::str::FromStr for OutputMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "capture" => Ok(OutputMode::Capture),
            "inherit" => Ok(OutputMode::Inherit),
            _ => Err(format!(
                "{s:?} is not an output mode (expected capture or inherit)"
            )),
        }
    }
}

impl std::fmt::Display for OutputMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            OutputMode::Capture => "capture",
            OutputMode::Inherit => "inherit",
        })
    }
}

/// Where the children's output goes. The default captures it and forwards it to relaunch's
/// own stdout and stderr.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputConfig {
    /// Whether streams without a log file pass through relaunch (`--output`).
    pub mode: OutputMode,
    /// Capture the children's stdout into this file (absolute path).
    pub stdout_log: Option<PathBuf>,
    /// Capture the children's stderr into this file (absolute path).
    pub stderr_log: Option<PathBuf>,
    /// Send the children's stderr where their stdout goes (`2>&1`).
    pub redirect_stderr: bool,
    /// Rotate a file before it would grow past this many bytes; 0 never rotates.
    pub max_bytes: u64,
    /// How many rotated files to keep (`FILE.1` … `FILE.N`); 0 truncates instead.
    pub backups: u32,
    /// Start each line with `[GENERATION PID] `.
    pub prefix: bool,
}

impl Default for OutputConfig {
    fn default() -> Self {
        OutputConfig {
            mode: OutputMode::Capture,
            stdout_log: None,
            stderr_log: None,
            redirect_stderr: false,
            max_bytes: DEFAULT_MAX_BYTES,
            backups: DEFAULT_BACKUPS,
            prefix: false,
        }
    }
}

impl OutputConfig {
    /// Whether some log file is configured (then SIGUSR1 reopens the files).
    pub fn has_log_files(&self) -> bool {
        self.stdout_log.is_some() || self.stderr_log.is_some()
    }

    /// Whether relaunch reads the children's output itself (`--output capture`, or a log
    /// file).
    pub fn captures(&self) -> bool {
        self.mode == OutputMode::Capture || self.has_log_files()
    }
}

/// Cuts one pipe's bytes into whole lines.
#[derive(Debug, Default)]
pub(crate) struct LineBuffer {
    partial: Vec<u8>,
}

impl LineBuffer {
    /// Appends the whole lines that `chunk` completes to `out`, each starting with `prefix`;
    /// keeps the rest for the next call. A line reaching [`LINE_MAX`] bytes without a newline
    /// is written as a line of its own.
    pub fn push(&mut self, mut chunk: &[u8], prefix: &[u8], out: &mut Vec<u8>) {
        while !chunk.is_empty() {
            let room = LINE_MAX - self.partial.len();
            // One byte more than the room: a newline right after a full line keeps it whole.
            let window = &chunk[..chunk.len().min(room + 1)];
            match window.iter().position(|&b| b == b'\n') {
                Some(i) => {
                    out.extend_from_slice(prefix);
                    out.extend_from_slice(&self.partial);
                    out.extend_from_slice(&window[..=i]);
                    self.partial.clear();
                    chunk = &chunk[i + 1..];
                }
                None if window.len() > room => {
                    // The line is LINE_MAX long and goes on: cut it here.
                    out.extend_from_slice(prefix);
                    out.extend_from_slice(&self.partial);
                    out.extend_from_slice(&window[..room]);
                    out.push(b'\n');
                    self.partial.clear();
                    chunk = &chunk[room..];
                }
                None => {
                    self.partial.extend_from_slice(window);
                    chunk = &chunk[window.len()..];
                }
            }
        }
    }

    /// Appends the partial line, if any, with a newline (the pipe closed).
    pub fn finish(&mut self, prefix: &[u8], out: &mut Vec<u8>) {
        if !self.partial.is_empty() {
            out.extend_from_slice(prefix);
            out.append(&mut self.partial);
            out.push(b'\n');
        }
    }

    /// Bytes waiting for their newline.
    #[cfg(test)]
    pub fn pending(&self) -> usize {
        self.partial.len()
    }

    /// The partial line waiting for its newline.
    pub fn partial(&self) -> &[u8] {
        &self.partial
    }
}

/// One line of a child's output, as failure reports show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TailLine {
    /// `stdout` or `stderr` (the child's stream; with `--redirect-stderr`, `stdout`).
    pub stream: &'static str,
    /// The line, without its newline (invalid UTF-8 replaced), cut at [`TAIL_BYTES`].
    pub line: String,
}

/// The last lines of one generation: at most [`TAIL_LINES`] lines and [`TAIL_BYTES`] bytes.
#[derive(Debug, Default)]
struct Tail {
    lines: std::collections::VecDeque<(Sink, Vec<u8>)>,
    bytes: usize,
}

impl Tail {
    /// Keeps the last lines of `batch` (whole lines, each starting with `prefix_len` bytes of
    /// prefix). Only the last [`TAIL_LINES`] of the batch are looked at, so a fast writer
    /// costs a scan for newlines from the end, not a copy per line.
    fn push_batch(&mut self, sink: Sink, batch: &[u8], prefix_len: usize) {
        let body = batch.strip_suffix(b"\n").unwrap_or(batch);
        if batch.is_empty() {
            return;
        }
        let mut lines: Vec<&[u8]> = body.rsplit(|&b| b == b'\n').take(TAIL_LINES).collect();
        lines.reverse();
        for line in lines {
            self.push(sink, line.get(prefix_len..).unwrap_or_default());
        }
    }

    fn push(&mut self, sink: Sink, line: &[u8]) {
        let line = &line[..line.len().min(TAIL_BYTES)];
        self.bytes += line.len();
        self.lines.push_back((sink, line.to_vec()));
        while self.lines.len() > TAIL_LINES || (self.bytes > TAIL_BYTES && self.lines.len() > 1) {
            if let Some((_, old)) = self.lines.pop_front() {
                self.bytes -= old.len();
            }
        }
    }
}

fn tail_line(sink: Sink, line: &[u8]) -> TailLine {
    TailLine {
        stream: match sink {
            Sink::Stdout => "stdout",
            Sink::Stderr => "stderr",
        },
        line: String::from_utf8_lossy(line).into_owned(),
    }
}

/// One log file with size rotation. Writes never block the caller on anything but the disk,
/// and never fail: what cannot be written is counted as dropped.
#[derive(Debug)]
pub(crate) struct LogFile {
    path: PathBuf,
    file: Option<File>,
    max_bytes: u64,
    backups: u32,
    /// fds of relaunch itself that must follow the file across rotations and reopens (with
    /// `--daemon`, relaunch's own stdout/stderr).
    mirrors: Vec<RawFd>,
    /// Bytes dropped since writing started failing, and when it did.
    dropped: u64,
    failing_since: Option<Instant>,
    last_retry: Option<Instant>,
    /// Whether a failed rotation was already reported.
    rotate_failing: bool,
}

fn open_append(path: &Path) -> io::Result<File> {
    // std opens files close-on-exec.
    OpenOptions::new().create(true).append(true).open(path)
}

impl LogFile {
    /// Opens (creating) `path` for appending.
    pub fn open(path: &Path, max_bytes: u64, backups: u32) -> io::Result<LogFile> {
        Ok(LogFile {
            path: path.to_owned(),
            file: Some(open_append(path)?),
            max_bytes,
            backups,
            mirrors: Vec::new(),
            dropped: 0,
            failing_since: None,
            last_retry: None,
            rotate_failing: false,
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Makes relaunch's own `fd` a copy of this file, now and after every rotation or reopen.
    pub fn mirror(&mut self, fd: RawFd) -> io::Result<()> {
        self.mirrors.push(fd);
        self.sync_mirrors()
    }

    fn sync_mirrors(&self) -> io::Result<()> {
        if let Some(file) = &self.file {
            for &fd in &self.mirrors {
                nix::unistd::dup2(file.as_raw_fd(), fd)?;
            }
        }
        Ok(())
    }

    /// Closes and opens the file again at its path (after an external `mv`, a new one).
    pub fn reopen(&mut self) -> io::Result<()> {
        let file = open_append(&self.path)?;
        self.file = Some(file);
        self.sync_mirrors()
    }

    /// Writes `data`, which holds whole lines, rotating between lines as needed.
    pub fn write_lines(&mut self, mut data: &[u8]) {
        if data.is_empty() {
            return;
        }
        if self.file.is_none() || self.failing_since.is_some() {
            let due = self.last_retry.is_none_or(|t| t.elapsed() >= RETRY_EVERY);
            if !due {
                self.drop_bytes(data.len(), None);
                return;
            }
            self.last_retry = Some(Instant::now());
            if self.file.is_none() {
                if let Err(e) = self.reopen() {
                    self.drop_bytes(data.len(), Some(&e));
                    return;
                }
            }
        }
        // From the file itself: relaunch's own lines (with --daemon) and external truncation
        // count too.
        let mut size = match self.file.as_ref().map(File::metadata) {
            Some(Ok(m)) => m.len(),
            _ => 0,
        };
        while !data.is_empty() {
            let first_line = || {
                data.iter()
                    .position(|&b| b == b'\n')
                    .map_or(data.len(), |i| i + 1)
            };
            let take = if self.max_bytes == 0 {
                data.len()
            } else {
                let room = self.max_bytes.saturating_sub(size).min(data.len() as u64) as usize;
                let fits = if room == data.len() {
                    room
                } else {
                    data[..room]
                        .iter()
                        .rposition(|&b| b == b'\n')
                        .map_or(0, |i| i + 1)
                };
                if fits > 0 {
                    fits
                } else if size == 0 {
                    // One line longer than the limit, alone in a fresh file: written whole.
                    first_line()
                } else if self.rotate() {
                    size = 0;
                    continue;
                } else {
                    // Cannot rotate (reported): keep appending rather than drop.
                    data.len()
                }
            };
            let Some(file) = self.file.as_mut() else {
                self.drop_bytes(data.len(), None);
                return;
            };
            match file.write_all(&data[..take]) {
                Ok(()) => {
                    self.recovered();
                    size += take as u64;
                    data = &data[take..];
                }
                Err(e) => {
                    self.drop_bytes(data.len(), Some(&e));
                    return;
                }
            }
        }
    }

    /// `FILE.N-1` → `FILE.N`, …, `FILE` → `FILE.1`, then a new `FILE` (or truncation with no
    /// backups). On failure the current file is kept and false returned.
    fn rotate(&mut self) -> bool {
        let result = if self.backups == 0 {
            match &self.file {
                Some(f) => f.set_len(0),
                None => Ok(()),
            }
        } else {
            self.shift_backups()
        };
        match result {
            Ok(()) => {
                if self.rotate_failing {
                    warn!(path = %self.path.display(), "log rotation works again");
                }
                self.rotate_failing = false;
                debug!(path = %self.path.display(), "rotated");
                true
            }
            Err(e) => {
                if !self.rotate_failing {
                    warn!(path = %self.path.display(), error = %e, "cannot rotate the log file; appending to it past --log-max-bytes");
                }
                self.rotate_failing = true;
                false
            }
        }
    }

    fn shift_backups(&mut self) -> io::Result<()> {
        let numbered = |n: u32| {
            let mut name = self.path.clone().into_os_string();
            name.push(format!(".{n}"));
            PathBuf::from(name)
        };
        for n in (1..self.backups).rev() {
            match fs::rename(numbered(n), numbered(n + 1)) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        fs::rename(&self.path, numbered(1))?;
        self.reopen()
    }

    fn drop_bytes(&mut self, n: usize, error: Option<&io::Error>) {
        if self.failing_since.is_none() {
            self.failing_since = Some(Instant::now());
            self.last_retry = Some(Instant::now());
            let error = error.map_or_else(|| "not open".to_owned(), ToString::to_string);
            warn!(path = %self.path.display(), error = %error, "cannot write the log file; dropping the children's output until it works again");
        }
        self.dropped += n as u64;
    }

    fn recovered(&mut self) {
        if let Some(since) = self.failing_since.take() {
            warn!(
                path = %self.path.display(),
                dropped_bytes = self.dropped,
                failed_for_ms = since.elapsed().as_millis() as u64,
                "writing the log file again; output was dropped meanwhile"
            );
            self.dropped = 0;
        }
    }

    /// Reports bytes still counted as dropped (at exit).
    fn report_dropped(&mut self) {
        if self.failing_since.is_some() && self.dropped > 0 {
            warn!(path = %self.path.display(), dropped_bytes = self.dropped, "the children's output was dropped: the log file could not be written");
            self.dropped = 0;
        }
    }
}

/// Which log file a pipe feeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sink {
    Stdout,
    Stderr,
}

/// The read end of one child's output pipe.
#[derive(Debug)]
struct Pipe {
    generation: u64,
    pid: Pid,
    sink: Sink,
    fd: Polled<OwnedFd>,
    lines: LineBuffer,
    prefix: Vec<u8>,
}

/// The pipes made for one child before it is spawned.
#[derive(Debug, Default)]
pub(crate) struct ChildPipes {
    /// The master fd to become the child's stdout (see `sys::spawn::Extras::stdout`).
    pub stdout: Option<RawFd>,
    /// The master fd to become the child's stderr.
    pub stderr: Option<RawFd>,
    write_ends: Vec<OwnedFd>,
    read_ends: Vec<(Sink, OwnedFd)>,
}

thread_local! {
    /// The buffer every [`Output`] of this thread reads its pipes into: one per master rather
    /// than one per program (1,000 programs kept 64 MiB of them, BENCHMARKS.md "Many
    /// programs").
    static READ_BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The children's output: the log files and the pipes that feed them.
#[derive(Debug)]
pub(crate) struct Output {
    config: OutputConfig,
    stdout: Option<LogFile>,
    stderr: Option<LogFile>,
    pipes: Vec<Pipe>,
    out: Vec<u8>,
    /// With several programs: the program's name, first in `--log-prefix`.
    name: Option<String>,
    /// The last lines of the last generations, oldest generation first.
    tails: std::collections::BTreeMap<u64, Tail>,
}

impl Output {
    /// Opens the configured log files. With `mirror_stdio` (`--daemon`), relaunch's own fd 1
    /// becomes the stdout log and fd 2 the stderr log (or the stdout log with
    /// `--redirect-stderr`), following them across rotations, so relaunch's own log lines land
    /// there too.
    pub fn open(config: &OutputConfig, mirror_stdio: bool) -> anyhow::Result<Output> {
        let open = |path: &Option<PathBuf>| -> anyhow::Result<Option<LogFile>> {
            path.as_deref()
                .map(|p| {
                    LogFile::open(p, config.max_bytes, config.backups)
                        .with_context(|| format!("opening the log file {}", p.display()))
                })
                .transpose()
        };
        let mut output = Output {
            config: config.clone(),
            stdout: open(&config.stdout_log)?,
            stderr: open(&config.stderr_log)?,
            pipes: Vec::new(),
            out: Vec::new(),
            name: None,
            tails: std::collections::BTreeMap::new(),
        };
        if mirror_stdio {
            if let Some(f) = &mut output.stdout {
                f.mirror(1).context("redirecting relaunch's stdout")?;
            }
            let own_log = match (&mut output.stderr, config.redirect_stderr) {
                (Some(f), _) => Some(f),
                (None, true) => output.stdout.as_mut(),
                (None, false) => None,
            };
            if let Some(f) = own_log {
                f.mirror(2).context("redirecting relaunch's stderr")?;
            }
        }
        Ok(output)
    }

    /// With several programs: `--log-prefix` lines start with the program's name,
    /// `[NAME GENERATION PID] `.
    pub fn name_lines(&mut self, name: &str) {
        self.name = Some(name.to_owned());
    }

    /// Whether log files are open (then SIGUSR1 reopens them).
    pub fn is_capturing(&self) -> bool {
        self.stdout.is_some() || self.stderr.is_some()
    }

    fn forwards(&self) -> bool {
        self.config.mode == OutputMode::Capture
    }

    /// Makes the pipes for a new child. Pass [`ChildPipes::stdout`] and
    /// [`ChildPipes::stderr`] to the spawn, then hand the result to [`Output::attach`] (or
    /// drop it if the spawn failed).
    pub fn pipes_for_child(&self) -> io::Result<ChildPipes> {
        let mut pipes = ChildPipes::default();
        if self.stdout.is_some() || self.forwards() {
            let wr = pipes.add(Sink::Stdout)?;
            pipes.stdout = Some(wr);
            if self.config.redirect_stderr {
                pipes.stderr = Some(wr);
            }
        } else if self.config.redirect_stderr {
            // Not captured: the child's stderr joins relaunch's stdout, which it inherits.
            pipes.stderr = Some(1);
        }
        // (--stderr-log and --redirect-stderr exclude each other.)
        if self.stderr.is_some() || (self.forwards() && !self.config.redirect_stderr) {
            pipes.stderr = Some(pipes.add(Sink::Stderr)?);
        }
        Ok(pipes)
    }

    /// Starts reading a spawned child's pipes, and closes the master's copies of their write
    /// ends (so end-of-file means the child and its descendants closed them).
    pub fn attach(&mut self, generation: u64, pid: Pid, pipes: ChildPipes) {
        drop(pipes.write_ends);
        let prefix = if self.config.prefix {
            match &self.name {
                Some(name) => format!("[{name} {generation} {pid}] ").into_bytes(),
                None => format!("[{generation} {pid}] ").into_bytes(),
            }
        } else {
            Vec::new()
        };
        if !pipes.read_ends.is_empty() {
            self.tails.insert(generation, Tail::default());
            while self.tails.len() > TAIL_GENERATIONS {
                self.tails.pop_first();
            }
        }
        for (sink, fd) in pipes.read_ends {
            self.pipes.push(Pipe {
                generation,
                pid,
                sink,
                fd: Polled::new(fd),
                lines: LineBuffer::default(),
                prefix: prefix.clone(),
            });
        }
    }

    /// The pipes to poll for reading.
    pub fn poll_sources(&self) -> impl Iterator<Item = &Polled<OwnedFd>> {
        self.pipes.iter().map(|p| &p.fd)
    }

    /// Reads at most [`READ_CHUNK`] bytes from every pipe and writes the whole lines; closes
    /// pipes at end-of-file.
    pub fn drain(&mut self) {
        self.read_some(READ_CHUNK, None);
    }

    /// Reads what is waiting in the pipes of the child `pid` (at most [`READ_CHUNK`] bytes
    /// each), so that a report about its exit sees what it wrote before it died.
    pub fn drain_child(&mut self, pid: Pid) {
        if self.pipes.iter().any(|p| p.pid == pid) {
            self.read_some(READ_CHUNK, Some(pid));
        }
    }

    /// The last lines generation `generation` wrote (oldest first), including a line it has
    /// not ended yet; empty when its output is not captured or it wrote nothing.
    pub fn tail(&self, generation: u64) -> Vec<TailLine> {
        let Some(tail) = self.tails.get(&generation) else {
            return Vec::new();
        };
        let mut lines: Vec<TailLine> = tail.lines.iter().map(|(k, l)| tail_line(*k, l)).collect();
        for pipe in self.pipes.iter().filter(|p| p.generation == generation) {
            let partial = pipe.lines.partial();
            if !partial.is_empty() {
                lines.push(tail_line(
                    pipe.sink,
                    &partial[..partial.len().min(TAIL_BYTES)],
                ));
            }
        }
        let excess = lines.len().saturating_sub(TAIL_LINES);
        lines.drain(..excess);
        lines
    }

    /// Closes and opens every log file again (SIGUSR1).
    pub fn reopen(&mut self) {
        for file in [&mut self.stdout, &mut self.stderr].into_iter().flatten() {
            match file.reopen() {
                Ok(()) => tracing::info!(path = %file.path().display(), "reopened the log file"),
                Err(e) => {
                    warn!(path = %file.path().display(), error = %e, "cannot reopen the log file; still writing to the old one")
                }
            }
        }
    }

    /// At exit: reads what is left in the pipes (bounded, in case a descendant still writes),
    /// writes every partial line, and reports dropped output.
    pub fn finish(&mut self) {
        self.read_some(FINAL_DRAIN, None);
        for mut pipe in std::mem::take(&mut self.pipes) {
            self.out.clear();
            pipe.lines.finish(&pipe.prefix, &mut self.out);
            self.write(pipe.sink);
        }
        for file in [&mut self.stdout, &mut self.stderr].into_iter().flatten() {
            file.report_dropped();
        }
    }

    /// Reads at most `budget` bytes from each pipe (of the child `only`, if given).
    fn read_some(&mut self, budget: usize, only: Option<Pid>) {
        let mut buf = READ_BUF.take();
        if buf.len() < READ_CHUNK {
            // A fresh zeroed allocation rather than a resize that writes every byte: the
            // allocator hands out fresh pages already zeroed, so the pages no read reaches are
            // never touched and never become resident.
            buf = vec![0u8; READ_CHUNK];
        }
        let mut i = 0;
        while i < self.pipes.len() {
            if only.is_some_and(|pid| self.pipes[i].pid != pid) {
                i += 1;
                continue;
            }
            let mut left = budget;
            let mut closed = false;
            while left > 0 {
                let want = left.min(READ_CHUNK);
                match nix::unistd::read(self.pipes[i].fd.as_raw_fd(), &mut buf[..want]) {
                    Ok(0) => {
                        closed = true;
                        break;
                    }
                    Ok(n) => {
                        left -= n;
                        let pipe = &mut self.pipes[i];
                        self.out.clear();
                        pipe.lines.push(&buf[..n], &pipe.prefix, &mut self.out);
                        let (sink, generation) = (pipe.sink, pipe.generation);
                        let prefix_len = pipe.prefix.len();
                        if let Some(tail) = self.tails.get_mut(&generation) {
                            tail.push_batch(sink, &self.out, prefix_len);
                        }
                        self.write(sink);
                    }
                    Err(Errno::EINTR) => continue,
                    Err(Errno::EAGAIN) => break,
                    Err(e) => {
                        let p = &self.pipes[i];
                        warn!(generation = p.generation, pid = %p.pid, error = %e, "cannot read the child's output; no longer capturing it");
                        closed = true;
                        break;
                    }
                }
            }
            if closed {
                let mut pipe = self.pipes.remove(i);
                debug!(generation = pipe.generation, pid = %pipe.pid, stream = ?pipe.sink, "output pipe closed");
                self.out.clear();
                pipe.lines.finish(&pipe.prefix, &mut self.out);
                if let Some(tail) = self.tails.get_mut(&pipe.generation) {
                    tail.push_batch(pipe.sink, &self.out, pipe.prefix.len());
                }
                self.write(pipe.sink);
            } else {
                i += 1;
            }
        }
        READ_BUF.set(buf);
    }

    /// Writes `self.out` to the sink's file, or forwards it to relaunch's own stdout or
    /// stderr.
    fn write(&mut self, sink: Sink) {
        let file = match sink {
            Sink::Stdout => self.stdout.as_mut(),
            Sink::Stderr => self.stderr.as_mut(),
        };
        if let Some(file) = file {
            file.write_lines(&self.out);
        } else if self.config.mode == OutputMode::Capture {
            match sink {
                Sink::Stdout => forward(io::stdout().as_fd(), &self.out),
                Sink::Stderr => forward(io::stderr().as_fd(), &self.out),
            }
        }
    }
}

/// Writes `data` (whole lines) to relaunch's own `fd`, as relaunch's log lines are written.
/// What cannot be written (the reader is gone, or someone made the fd non-blocking and it is
/// full) is dropped: the master never waits in a loop for it.
fn forward(fd: BorrowedFd<'_>, mut data: &[u8]) {
    while !data.is_empty() {
        match nix::unistd::write(fd, data) {
            Ok(0) => return,
            Ok(n) => data = &data[n..],
            Err(Errno::EINTR) => continue,
            Err(e) => {
                debug!(fd = fd.as_raw_fd(), error = %e, bytes = data.len(), "cannot forward the children's output; dropped");
                return;
            }
        }
    }
}

impl ChildPipes {
    /// A new pipe feeding `sink`; returns the write end's number.
    fn add(&mut self, sink: Sink) -> io::Result<RawFd> {
        let (rd, wr) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
        fcntl(rd.as_raw_fd(), FcntlArg::F_SETFL(OFlag::O_NONBLOCK))?;
        // Best effort: over the user's pipe budget (EPERM) the default size works too.
        let _ = fcntl(rd.as_raw_fd(), FcntlArg::F_SETPIPE_SZ(PIPE_BYTES));
        let raw = wr.as_raw_fd();
        self.write_ends.push(wr);
        self.read_ends.push((sink, rd));
        Ok(raw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_cut_whole_and_prefixed() {
        let mut lb = LineBuffer::default();
        let mut out = Vec::new();
        lb.push(b"one\ntw", b"[1 2] ", &mut out);
        assert_eq!(out, b"[1 2] one\n");
        assert_eq!(lb.pending(), 2);
        lb.push(b"o\nthree\nfo", b"[1 2] ", &mut out);
        assert_eq!(out, b"[1 2] one\n[1 2] two\n[1 2] three\n");
        lb.finish(b"[1 2] ", &mut out);
        assert_eq!(out, b"[1 2] one\n[1 2] two\n[1 2] three\n[1 2] fo\n");
        assert_eq!(lb.pending(), 0);
        let mut again = Vec::new();
        lb.finish(b"x", &mut again);
        assert!(again.is_empty(), "nothing pending, nothing written");
    }

    #[test]
    fn overlong_lines_are_cut_at_line_max() {
        let mut lb = LineBuffer::default();
        let mut out = Vec::new();
        let long = vec![b'a'; LINE_MAX * 2 + 10];
        // In uneven chunks, to cross the limit inside a chunk.
        for chunk in long.chunks(1000) {
            lb.push(chunk, b"", &mut out);
        }
        lb.push(b"\n", b"", &mut out);
        let lines: Vec<&[u8]> = out.split_inclusive(|&b| b == b'\n').collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0].len(), LINE_MAX + 1);
        assert_eq!(lines[1].len(), LINE_MAX + 1);
        assert_eq!(lines[2].len(), 11);
        // A line of exactly LINE_MAX bytes plus its newline stays whole.
        let mut out = Vec::new();
        let mut exact = vec![b'b'; LINE_MAX];
        exact.push(b'\n');
        lb.push(&exact, b"", &mut out);
        assert!(
            out == exact,
            "{} bytes instead of {}",
            out.len(),
            exact.len()
        );
    }

    #[test]
    fn the_tail_keeps_the_last_lines_within_its_bounds() {
        let mut tail = Tail::default();
        let batch: String = (0..50).map(|i| format!("[1 2] line {i}\n")).collect();
        tail.push_batch(Sink::Stderr, batch.as_bytes(), 6);
        assert_eq!(tail.lines.len(), TAIL_LINES);
        assert_eq!(tail.lines.front().unwrap().1, b"line 30");
        assert_eq!(tail.lines.back().unwrap().1, b"line 49");
        // A long line pushes older ones out to stay under TAIL_BYTES, and is cut itself.
        let long = format!("{}\n", "x".repeat(3 * TAIL_BYTES));
        tail.push_batch(Sink::Stdout, long.as_bytes(), 0);
        assert_eq!(tail.lines.len(), 1);
        assert_eq!(tail.bytes, TAIL_BYTES);
        tail.push_batch(Sink::Stderr, b"short\n", 0);
        assert!(tail.bytes <= TAIL_BYTES, "{}", tail.bytes);
        assert_eq!(tail.lines.back().unwrap().1, b"short");
        let total: usize = tail.lines.iter().map(|(_, l)| l.len()).sum();
        assert_eq!(total, tail.bytes);
    }

    #[test]
    fn the_tail_of_a_generation_includes_its_unfinished_line() {
        let mut output = Output::open(&OutputConfig::default(), false).unwrap();
        let pipes = output.pipes_for_child().unwrap();
        assert_ne!(pipes.stdout, pipes.stderr, "capture: a pipe per stream");
        let out_w = pipes.write_ends[0].try_clone().unwrap();
        let err_w = pipes.write_ends[1].try_clone().unwrap();
        let pid = Pid::from_raw(4242);
        output.attach(7, pid, pipes);
        nix::unistd::write(&err_w, b"tail test: first\ntail test: unfinished").unwrap();
        output.drain_child(pid);
        let line = |stream, line: &str| TailLine {
            stream,
            line: line.to_owned(),
        };
        assert_eq!(
            output.tail(7),
            [
                line("stderr", "tail test: first"),
                line("stderr", "tail test: unfinished")
            ]
        );
        nix::unistd::write(&out_w, b"tail test: out\n").unwrap();
        drop((out_w, err_w));
        output.drain();
        assert_eq!(output.poll_sources().count(), 0, "both pipes closed");
        let tail = output.tail(7);
        assert_eq!(tail.len(), 3, "{tail:?}");
        assert!(tail.contains(&line("stdout", "tail test: out")), "{tail:?}");
        assert_eq!(tail.last(), Some(&line("stderr", "tail test: unfinished")));
        assert!(output.tail(6).is_empty(), "no such generation");
    }

    #[test]
    fn inherit_without_log_files_makes_no_pipes() {
        let config = OutputConfig {
            mode: OutputMode::Inherit,
            ..OutputConfig::default()
        };
        assert!(!config.captures());
        let output = Output::open(&config, false).unwrap();
        let pipes = output.pipes_for_child().unwrap();
        assert_eq!((pipes.stdout, pipes.stderr), (None, None));
        assert!("Capture".parse::<OutputMode>() == Ok(OutputMode::Capture));
        let err = "tee".parse::<OutputMode>().unwrap_err();
        assert!(
            err.contains("\"tee\"") && err.contains("capture or inherit"),
            "{err}"
        );
    }

    #[test]
    fn captured_pipes_are_enlarged() {
        let output = Output::open(&OutputConfig::default(), false).unwrap();
        let pipes = output.pipes_for_child().unwrap();
        assert_eq!(pipes.read_ends.len(), 2);
        // The kernel's limit for an unprivileged user (pipe-max-size) is 1 MiB by default.
        let max: i32 = fs::read_to_string("/proc/sys/fs/pipe-max-size")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        for (_, fd) in &pipes.read_ends {
            let size = fcntl(fd.as_raw_fd(), FcntlArg::F_GETPIPE_SZ).unwrap();
            if max >= PIPE_BYTES {
                assert_eq!(size, PIPE_BYTES);
            }
        }
    }

    fn temp(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "relaunch-output-{tag}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn rotation_keeps_lines_whole_and_files_under_the_limit() {
        let dir = temp("rotate");
        let path = dir.join("out.log");
        let mut log = LogFile::open(&path, 100, 3).unwrap();
        let mut all = Vec::new();
        for i in 0..60 {
            let line = format!("line {i:04} {}\n", "x".repeat(i % 17));
            all.extend_from_slice(line.as_bytes());
            log.write_lines(line.as_bytes());
        }
        // And a batch of many lines at once.
        let batch: String = (60..90).map(|i| format!("line {i:04}\n")).collect();
        all.extend_from_slice(batch.as_bytes());
        log.write_lines(batch.as_bytes());
        // A line longer than the limit is written whole, alone.
        let long = format!("{}\n", "L".repeat(250));
        log.write_lines(long.as_bytes());
        log.write_lines(b"after\n");
        let read = |p: &Path| fs::read(p).unwrap_or_default();
        let f = |n: u32| PathBuf::from(format!("{}.{n}", path.display()));
        assert!(!f(4).exists(), "only 3 backups");
        assert_eq!(read(&path), b"after\n");
        assert_eq!(read(&f(1)), long.as_bytes());
        for p in [f(2), f(3)] {
            let data = read(&p);
            assert!(!data.is_empty() && data.len() <= 100, "{}", data.len());
            assert!(data.ends_with(b"\n"));
            assert!(all.windows(data.len()).any(|w| w == data), "lines in order");
        }
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn no_backups_truncates_and_zero_max_never_rotates() {
        let dir = temp("truncate");
        let path = dir.join("out.log");
        let mut log = LogFile::open(&path, 10, 0).unwrap();
        log.write_lines(b"12345\n");
        log.write_lines(b"abcdef\n");
        assert_eq!(fs::read(&path).unwrap(), b"abcdef\n");
        assert!(!dir.join("out.log.1").exists());
        let path2 = dir.join("big.log");
        let mut log = LogFile::open(&path2, 0, 3).unwrap();
        for _ in 0..100 {
            log.write_lines(b"0123456789\n");
        }
        assert_eq!(fs::metadata(&path2).unwrap().len(), 1100);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn unwritable_file_drops_and_counts() {
        let dir = temp("drop");
        let path = dir.join("out.log");
        let mut log = LogFile::open(&path, 0, 1).unwrap();
        log.write_lines(b"kept\n");
        // Replace the file with one opened read-only: writes fail with EBADF.
        log.file = Some(File::open(&path).unwrap());
        log.write_lines(b"lost one\n");
        log.write_lines(b"lost two\n");
        assert_eq!(log.dropped, 18);
        assert!(log.failing_since.is_some());
        // Once writable again (after the retry interval), it recovers and resets the count.
        log.file = Some(open_append(&path).unwrap());
        log.last_retry = Some(Instant::now() - RETRY_EVERY);
        log.write_lines(b"back\n");
        assert!(log.failing_since.is_none());
        assert_eq!(log.dropped, 0);
        assert_eq!(fs::read(&path).unwrap(), b"kept\nback\n");
        fs::remove_dir_all(&dir).unwrap();
    }
}
