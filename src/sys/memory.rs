//! Giving the master's idle memory back to the kernel when it goes idle.
//!
//! Startup (parsing the command line and the configuration, building the first exec images) and
//! each reload allocate memory that is freed again once the children are up, run code that an
//! idle master never runs again, and reach deeper into the main thread's stack than the wait
//! does. An idle master has no use for those pages, so [`release_idle_memory`] gives them back:
//!
//! 1. the page-table entries of clean, read-only, file-backed private mappings (its own
//!    binary, the C library, the dynamic loader): the pages stay in the page cache, and the
//!    master faults back in only what it touches when it next wakes up;
//! 2. the main thread's stack well below the current frame (dead frames of startup);
//! 3. the allocator's free pages (glibc's `malloc_trim(0)`).
//!
//! None of these changes what the master does, only what it keeps resident: every page given
//! back comes back, with the same content, on the next touch.

/// Gives back everything an idle master keeps resident without needing it (see the module
/// docs). The mappings are read and the ranges picked first, then the heap is trimmed (the
/// buffer the mappings were read into included), and the `madvise` calls come last, so that as
/// little as possible runs, and faults pages back in, between them and the wait. Called from
/// the event loop, never from a signal handler or between fork and exec. Errors are ignored:
/// this is an optimisation. Elsewhere than Linux with glibc: nothing.
pub(crate) fn release_idle_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    linux::release_idle_memory();
}

/// Returns the allocator's free pages to the kernel (glibc's `malloc_trim(0)`: it unmaps or
/// `MADV_DONTNEED`s every free page of every arena). Memory still in use is untouched, so this
/// changes what the master costs, never what it does. Elsewhere than glibc: nothing.
#[cfg_attr(not(all(target_os = "linux", target_env = "gnu")), allow(dead_code))]
fn release_free_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes the allocator's own locks and touches only free chunks; it is
    // called from the master's event loop, never from a signal handler or between fork and exec.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// How much of the main thread's stack below the current frame is kept: far more than any
/// frame the idle loop's calls (and a signal handler interrupting them) push below it.
#[cfg_attr(not(all(target_os = "linux", target_env = "gnu")), allow(dead_code))]
const STACK_MARGIN: usize = 64 * 1024;

/// One mapping of `/proc/PID/smaps`, with the fields the release decides on. A field the
/// kernel did not print is `None`, and a mapping with a `None` that matters is left alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(not(all(target_os = "linux", target_env = "gnu")), allow(dead_code))]
struct Mapping<'a> {
    start: usize,
    end: usize,
    /// `r-xp` and the like.
    perms: &'a str,
    /// The path, `[stack]`-like name, or "" for anonymous memory.
    name: &'a str,
    rss_kib: Option<u64>,
    anonymous_kib: Option<u64>,
    swap_kib: Option<u64>,
    locked_kib: Option<u64>,
    /// The two-letter `VmFlags`, "" when the kernel does not print them.
    flags: &'a str,
}

#[cfg_attr(not(all(target_os = "linux", target_env = "gnu")), allow(dead_code))]
impl Mapping<'_> {
    /// Whether dropping this mapping's page-table entries (`MADV_DONTNEED`) can only ever make
    /// the next touch fault the very same bytes back in from the page cache:
    ///
    /// - backed by a file (a path), so there is a page cache to fault from; not `[vdso]`,
    ///   `[vvar]`, `[stack]`, `[heap]` or anonymous memory, where `MADV_DONTNEED` means zeroes;
    /// - private and not writable, so no write of this process can be in it;
    /// - `Anonymous: 0 kB` and `Swap: 0 kB`: not one copy-on-write page, resident or swapped. A
    ///   read-only mapping with one is the RELRO segment (relocations written, then made
    ///   read-only) or a text page a debugger wrote: `MADV_DONTNEED` would throw those bytes
    ///   away and fault the file's original back;
    /// - not locked, not hugetlb, not a raw PFN or I/O mapping, not under userfaultfd;
    /// - something resident (`Rss` > 0), or there is nothing to give back.
    fn is_clean_file_text(&self) -> bool {
        let p = self.perms.as_bytes();
        let private_read_only = p.len() == 4 && p[1] != b'w' && p[3] == b'p';
        let flags_ok = !self
            .flags
            .split_ascii_whitespace()
            .any(|f| matches!(f, "lo" | "ht" | "pf" | "io" | "um" | "uw" | "wr" | "sh"));
        self.name.starts_with('/')
            && private_read_only
            && self.anonymous_kib == Some(0)
            && self.swap_kib == Some(0)
            && self.locked_kib == Some(0)
            && flags_ok
            && self.rss_kib.is_some_and(|r| r > 0)
    }

    /// The part of this mapping, if it is the main thread's stack, that lies at least
    /// [`STACK_MARGIN`] below `frame` (an address in the caller's current frame), rounded to
    /// whole pages: frames that returned long ago. None when there is no such part.
    fn dead_stack(&self, frame: usize, page: usize) -> Option<(usize, usize)> {
        if self.name != "[stack]" || self.locked_kib != Some(0) || self.rss_kib == Some(0) {
            return None;
        }
        let limit = frame.checked_sub(STACK_MARGIN)? & !(page - 1);
        let end = limit.min(self.end);
        (end > self.start).then(|| (self.start, end - self.start))
    }
}

/// Every mapping of `smaps` (the text of `/proc/PID/smaps`), in order. A pure function of the
/// text; lines it does not understand are skipped.
#[cfg_attr(not(all(target_os = "linux", target_env = "gnu")), allow(dead_code))]
fn mappings(smaps: &str) -> impl Iterator<Item = Mapping<'_>> {
    let mut lines = smaps.lines().peekable();
    std::iter::from_fn(move || loop {
        let Some(mut mapping) = header(lines.next()?) else {
            continue;
        };
        while let Some(line) = lines.peek() {
            if header(line).is_some() {
                break;
            }
            let (key, value) = line.split_once(':').unwrap_or((line, ""));
            let kib = || value.trim().strip_suffix("kB")?.trim().parse::<u64>().ok();
            match key {
                "Rss" => mapping.rss_kib = kib(),
                "Anonymous" => mapping.anonymous_kib = kib(),
                "Swap" => mapping.swap_kib = kib(),
                "Locked" => mapping.locked_kib = kib(),
                "VmFlags" => mapping.flags = value.trim(),
                _ => {}
            }
            lines.next();
        }
        return Some(mapping);
    })
}

/// A header line (`start-end perms offset dev inode [name]`) as a mapping with no fields yet.
#[cfg_attr(not(all(target_os = "linux", target_env = "gnu")), allow(dead_code))]
fn header(line: &str) -> Option<Mapping<'_>> {
    let mut rest = line;
    let mut token = || {
        let t = rest.trim_start_matches(' ');
        let end = t.find(' ').unwrap_or(t.len());
        rest = &t[end..];
        Some(&t[..end]).filter(|s| !s.is_empty())
    };
    let (start, end) = token()?.split_once('-')?;
    let start = usize::from_str_radix(start, 16).ok()?;
    let end = usize::from_str_radix(end, 16).ok()?;
    let perms = token()?;
    let (_offset, _dev, _inode) = (token()?, token()?, token()?);
    if perms.len() != 4 || end < start {
        return None;
    }
    Some(Mapping {
        start,
        end,
        perms,
        name: rest.trim(),
        rss_kib: None,
        anonymous_kib: None,
        swap_kib: None,
        locked_kib: None,
        flags: "",
    })
}

/// The `Threads:` count of a `/proc/PID/status` text.
#[cfg_attr(not(all(target_os = "linux", target_env = "gnu")), allow(dead_code))]
fn threads(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|v| v.trim().parse().ok())
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod linux {
    use super::{mappings, threads};
    use std::io::Read;

    /// Drops the page-table entries of the clean file-backed text
    /// ([`super::Mapping::is_clean_file_text`]) and, on the main thread, of the dead part of its
    /// stack ([`super::Mapping::dead_stack`]), with the heap trimmed between picking the ranges
    /// and dropping them (at most [`MAX_RANGES`]; picked without allocating).
    ///
    /// Why this is safe. `MADV_DONTNEED` on a private file mapping unmaps its pages from this
    /// process; the next touch faults them in again from the page cache (or the file). For a
    /// mapping that is not writable and holds no anonymous (copy-on-write) page, resident or
    /// swapped, every resident page *is* the file's page, so the refault gives the identical
    /// bytes: this is what the kernel's own reclaim does to these pages under memory pressure at
    /// any moment, minus evicting them from the page cache. Another thread running that code
    /// would only fault. The decision is taken on a snapshot of `smaps`, so nothing may change
    /// the address space between reading it and the `madvise`: the file mappings are dropped
    /// only while the process has one thread (the `relaunch` binary's master; a library caller
    /// with threads of its own keeps them), and every signal is blocked across, so no handler
    /// runs in between (one that mapped memory could otherwise reuse an address).
    ///
    /// The stack: what lies below the stack pointer is dead (beyond x86-64's 128-byte red
    /// zone); the part dropped starts [`super::STACK_MARGIN`] below the current frame, signals
    /// are blocked while it is dropped (a handler runs on this stack), and only the process's
    /// main thread (thread id = process id, the thread `[stack]` belongs to) does it. A later
    /// call that reaches that deep faults in zeroed pages, as a fresh stack does.
    ///
    /// What it changes: the process's VmRSS, `Rss`/`Pss` in `smaps`, and the minor faults of
    /// the next wake-up (the code it runs comes back, in fault-around blocks). What it does not
    /// change: the page cache (the pages stay cached, shared with every other process mapping
    /// the same files) and so the memory cgroup's charge for them, nor any content. Any error
    /// (no `/proc`, a failed `madvise`) leaves the rest as it was.
    pub(super) fn release_idle_memory() {
        let mut picked = Ranges::default();
        let old = block_signals();
        {
            let mut smaps = String::with_capacity(16 * 1024);
            let mut status = String::with_capacity(2 * 1024);
            let main_thread = nix::unistd::gettid() == nix::unistd::getpid();
            let frame = 0u8;
            let frame = std::hint::black_box(&frame) as *const u8 as usize;
            let read = |path: &str, into: &mut String| {
                std::fs::File::open(path).and_then(|mut f| f.read_to_string(into))
            };
            if read("/proc/self/status", &mut status).is_ok()
                && read("/proc/self/smaps", &mut smaps).is_ok()
            {
                let single = threads(&status) == Some(1);
                pick(&smaps, single, main_thread.then_some(frame), &mut picked);
            }
        }
        super::release_free_heap();
        picked.drop_all();
        restore_signals(&old);
    }

    /// At most this many ranges are dropped per call (the master has about 20 file mappings).
    const MAX_RANGES: usize = 64;

    /// The ranges picked from one `smaps` snapshot, without allocating.
    pub(super) struct Ranges {
        items: [(usize, usize); MAX_RANGES],
        pub(super) len: usize,
    }

    impl Default for Ranges {
        fn default() -> Self {
            Ranges {
                items: [(0, 0); MAX_RANGES],
                len: 0,
            }
        }
    }

    impl Ranges {
        fn push(&mut self, range: (usize, usize)) {
            if let Some(slot) = self.items.get_mut(self.len) {
                *slot = range;
                self.len += 1;
            }
        }

        /// `MADV_DONTNEED` on each range; returns how many succeeded.
        pub(super) fn drop_all(&self) -> usize {
            let picked = &self.items[..self.len];
            picked.iter().filter(|&&(s, l)| dont_need(s, l)).count()
        }
    }

    /// Picks, from one `smaps` snapshot, the clean file text when `files` and the dead stack
    /// below `frame` when given.
    pub(super) fn pick(smaps: &str, files: bool, frame: Option<usize>, into: &mut Ranges) {
        let page = page_size();
        for m in mappings(smaps) {
            if files && m.is_clean_file_text() {
                into.push((m.start, m.end - m.start));
            }
            if let Some(range) = frame.and_then(|f| m.dead_stack(f, page)) {
                into.push(range);
            }
        }
    }

    fn dont_need(start: usize, len: usize) -> bool {
        // SAFETY: the range is one mapping of this process as `smaps` showed it a moment ago,
        // and either clean file text (refaults give the same bytes) or the main thread's stack
        // at least STACK_MARGIN below the live frames (dead): see `release_idle_memory` for why
        // nothing else can have changed it in between. madvise reads no memory of ours.
        unsafe { libc::madvise(start as *mut libc::c_void, len, libc::MADV_DONTNEED) == 0 }
    }

    fn page_size() -> usize {
        // SAFETY: sysconf reads a constant of the system; no memory of ours is involved.
        let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        usize::try_from(size).unwrap_or(4096).max(4096)
    }

    fn block_signals() -> libc::sigset_t {
        // SAFETY: sigfillset/pthread_sigmask only write the sigset_t values we own on this stack.
        unsafe {
            let mut all: libc::sigset_t = std::mem::zeroed();
            let mut old: libc::sigset_t = std::mem::zeroed();
            libc::sigfillset(&mut all);
            libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
            old
        }
    }

    fn restore_signals(old: &libc::sigset_t) {
        // SAFETY: restores the mask `block_signals` saved; `old` is a valid sigset_t.
        unsafe {
            libc::pthread_sigmask(libc::SIG_SETMASK, old, std::ptr::null_mut());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fixed sample: the binary's text (droppable), its RELRO (`r--p` with an anonymous
    /// page), its data (`rw-p`), a locked mapping, a swapped one, anonymous memory, the heap,
    /// the stack, `[vvar]`, `[vdso]`, a path with spaces, and one with no `Rss`.
    const SAMPLE: &str = "\
55d0c0a00000-55d0c0a40000 r--p 00000000 fe:00 1234                       /usr/bin/relaunch
Size:                256 kB
Rss:                 200 kB
Anonymous:             0 kB
Swap:                  0 kB
Locked:                0 kB
VmFlags: rd mr mw me dw sd
55d0c0a40000-55d0c0c00000 r-xp 00040000 fe:00 1234                       /usr/bin/relaunch
Size:               1792 kB
KernelPageSize:        4 kB
Rss:                1600 kB
Pss:                1600 kB
Anonymous:             0 kB
Swap:                  0 kB
Locked:                0 kB
VmFlags: rd ex mr mw me dw sd
55d0c0c00000-55d0c0c10000 r--p 001c0000 fe:00 1234                       /usr/bin/relaunch
Size:                 64 kB
Rss:                  64 kB
Anonymous:             8 kB
Swap:                  0 kB
Locked:                0 kB
VmFlags: rd mr mw me dw ac sd
55d0c0c10000-55d0c0c12000 rw-p 001d0000 fe:00 1234                       /usr/bin/relaunch
Size:                  8 kB
Rss:                   8 kB
Anonymous:             0 kB
Swap:                  0 kB
Locked:                0 kB
VmFlags: rd wr mr mw me dw ac sd
55d0c1000000-55d0c1040000 rw-p 00000000 00:00 0                          [heap]
Size:                256 kB
Rss:                 180 kB
Anonymous:           180 kB
Swap:                  0 kB
Locked:                0 kB
VmFlags: rd wr mr mw me ac sd
7f0000000000-7f0000010000 rw-p 00000000 00:00 0 
Size:                 64 kB
Rss:                  36 kB
Anonymous:            36 kB
Swap:                  0 kB
Locked:                0 kB
VmFlags: rd wr mr mw me ac sd
7f0000100000-7f0000128000 r--p 00000000 fe:00 99                         /usr/lib/x86_64-linux-gnu/libc.so.6
Size:                160 kB
Rss:                 160 kB
Anonymous:             0 kB
Swap:                  0 kB
Locked:                0 kB
VmFlags: rd mr mw me sd
7f0000128000-7f00002b0000 r-xp 00028000 fe:00 99                         /usr/lib/x86_64-linux-gnu/libc.so.6
Size:               1568 kB
Rss:                1100 kB
Anonymous:             0 kB
Swap:                  0 kB
Locked:             1100 kB
VmFlags: rd ex mr mw me lo sd
7f00002b0000-7f00002b8000 r--p 001b0000 fe:00 99                         /usr/lib/x86_64-linux-gnu/libc.so.6
Size:                 32 kB
Rss:                  16 kB
Anonymous:             0 kB
Swap:                 16 kB
Locked:                0 kB
VmFlags: rd mr mw me sd
7f0000300000-7f0000310000 r-xp 00000000 fe:00 77                         /opt/my app/lib x.so
Size:                 64 kB
Rss:                  12 kB
Anonymous:             0 kB
Swap:                  0 kB
Locked:                0 kB
VmFlags: rd ex mr mw me sd
7f0000400000-7f0000410000 r--p 00000000 fe:00 78                         /usr/lib/empty.so
Size:                 64 kB
Rss:                   0 kB
Anonymous:             0 kB
Swap:                  0 kB
Locked:                0 kB
VmFlags: rd mr mw me sd
7f0000500000-7f0000510000 r--s 00000000 fe:00 79                         /dev/shm/shared
Size:                 64 kB
Rss:                  64 kB
Anonymous:             0 kB
Swap:                  0 kB
Locked:                0 kB
VmFlags: rd sh mr mw me ms sd
7f0000600000-7f0000610000 r--p 00000000 fe:00 80                         /usr/lib/old-kernel.so
Size:                 64 kB
Rss:                  64 kB
7ffc00000000-7ffc00040000 rw-p 00000000 00:00 0                          [stack]
Size:                256 kB
Rss:                 240 kB
Anonymous:           240 kB
Swap:                  0 kB
Locked:                0 kB
VmFlags: rd wr mr mw me gd ac
7ffc000f0000-7ffc000f4000 r--p 00000000 00:00 0                          [vvar]
Size:                 16 kB
Rss:                   0 kB
Anonymous:             0 kB
Swap:                  0 kB
Locked:                0 kB
VmFlags: rd mr pf io de dd sd
7ffc000f4000-7ffc000f6000 r-xp 00000000 00:00 0                          [vdso]
Size:                  8 kB
Rss:                   4 kB
Anonymous:             0 kB
Swap:                  0 kB
Locked:                0 kB
VmFlags: rd ex mr mw me de sd
";

    #[test]
    fn the_parser_reads_every_mapping_and_its_fields() {
        let all: Vec<_> = mappings(SAMPLE).collect();
        assert_eq!(all.len(), 16);
        assert_eq!(
            all[1],
            Mapping {
                start: 0x55d0c0a40000,
                end: 0x55d0c0c00000,
                perms: "r-xp",
                name: "/usr/bin/relaunch",
                rss_kib: Some(1600),
                anonymous_kib: Some(0),
                swap_kib: Some(0),
                locked_kib: Some(0),
                flags: "rd ex mr mw me dw sd",
            }
        );
        assert_eq!(all[5].name, "", "anonymous memory has no name");
        assert_eq!(all[9].name, "/opt/my app/lib x.so");
        assert_eq!(all[12].anonymous_kib, None);
        assert_eq!(all[13].name, "[stack]");
    }

    #[test]
    fn only_clean_read_only_private_file_mappings_are_dropped() {
        let picked: Vec<_> = mappings(SAMPLE)
            .filter(Mapping::is_clean_file_text)
            .map(|m| (m.start, m.perms, m.name))
            .collect();
        assert_eq!(
            picked,
            [
                (0x55d0c0a00000, "r--p", "/usr/bin/relaunch"),
                (0x55d0c0a40000, "r-xp", "/usr/bin/relaunch"),
                (
                    0x7f0000100000,
                    "r--p",
                    "/usr/lib/x86_64-linux-gnu/libc.so.6"
                ),
                (0x7f0000300000, "r-xp", "/opt/my app/lib x.so"),
            ],
            "not the RELRO (anonymous 8 kB), the rw-p data, the heap, anonymous memory, the \
             locked text, the swapped page, nothing resident, a shared mapping, one without \
             the fields, the stack, [vvar] or [vdso]"
        );
    }

    #[test]
    fn the_dead_stack_is_what_lies_a_margin_below_the_frame() {
        let stack = mappings(SAMPLE).find(|m| m.name == "[stack]").unwrap();
        let page = 4096;
        // The frame 200 KiB above the stack's bottom: the lowest 136 KiB are dead.
        let frame = 0x7ffc00000000 + 200 * 1024 + 123;
        assert_eq!(
            stack.dead_stack(frame, page),
            Some((0x7ffc00000000, 136 * 1024))
        );
        // Within the margin of the bottom: nothing.
        assert_eq!(stack.dead_stack(0x7ffc00000000 + 60 * 1024, page), None);
        // Never beyond the mapping, and never another mapping.
        assert_eq!(
            stack.dead_stack(0x7ffc00100000, page),
            Some((0x7ffc00000000, 256 * 1024))
        );
        let text = mappings(SAMPLE).nth(1).unwrap();
        assert_eq!(text.dead_stack(text.end + (1 << 20), page), None);
    }

    #[test]
    fn the_thread_count_comes_from_status() {
        assert_eq!(threads("Name:\tx\nThreads:\t1\nPid:\t3\n"), Some(1));
        assert_eq!(threads("Threads:\t12\n"), Some(12));
        assert_eq!(threads("Name:\tx\n"), None);
    }

    /// Runs [`in_a_process_of_its_own`] alone in a fresh test process (the drop must not race
    /// other tests' threads mapping libraries) and checks what it reports.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn dropping_the_file_pages_shrinks_rss_and_the_process_runs_on() {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "sys::memory::tests::in_a_process_of_its_own",
                "--ignored",
                "--test-threads=1",
                "--nocapture",
            ])
            .env("RELAUNCH_MEMORY_TEST_CHILD", "1")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stdout}\n{stderr}");
        let line = stdout
            .lines()
            .find(|l| l.contains("dropped:"))
            .unwrap_or_else(|| panic!("no report in {stdout}\n{stderr}"));
        println!("{line}");
    }

    /// The real drop, in a process of its own (started by the test above; ignored otherwise).
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    #[ignore = "run by dropping_the_file_pages_shrinks_rss_and_the_process_runs_on"]
    fn in_a_process_of_its_own() {
        if std::env::var_os("RELAUNCH_MEMORY_TEST_CHILD").is_none() {
            return;
        }
        let droppable = |text: &str| -> u64 {
            mappings(text)
                .filter(Mapping::is_clean_file_text)
                .filter_map(|m| m.rss_kib)
                .sum()
        };
        let rss_at = |text: &str, at: usize| mappings(text).find(|m| m.start == at)?.rss_kib;
        // Two mappings of our own binary's first 64 KiB that nothing else touches: one clean,
        // one made like a RELRO segment (written while writable, then made read-only).
        const LEN: usize = 64 * 1024;
        let file = std::fs::File::open(std::env::current_exe().unwrap()).unwrap();
        let map = |prot| {
            use std::os::fd::AsRawFd;
            // SAFETY: a fresh private mapping of an open file, at an address the kernel picks;
            // it is unmapped below and no reference into it outlives this test.
            let p = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    LEN,
                    prot,
                    libc::MAP_PRIVATE,
                    file.as_raw_fd(),
                    0,
                )
            };
            assert_ne!(p, libc::MAP_FAILED);
            p as usize
        };
        let clean = map(libc::PROT_READ);
        let relro = map(libc::PROT_READ | libc::PROT_WRITE);
        // SAFETY: both mappings are LEN bytes, readable, live until the munmap below; `relro`
        // is writable until the mprotect.
        let (original, written) = unsafe {
            let original = std::slice::from_raw_parts(clean as *const u8, LEN).to_vec();
            std::ptr::write_volatile(relro as *mut u8, !original[0]);
            assert_eq!(
                libc::mprotect(relro as *mut libc::c_void, LEN, libc::PROT_READ),
                0
            );
            (
                original,
                std::slice::from_raw_parts(relro as *const u8, LEN).to_vec(),
            )
        };

        // Timed as the master takes it: reading smaps, parsing it, one madvise per mapping.
        let started = std::time::Instant::now();
        let before = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let mut picked = linux::Ranges::default();
        linux::pick(&before, true, None, &mut picked);
        let dropped = picked.drop_all();
        let took = started.elapsed();
        let after = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let (before_kib, after_kib) = (droppable(&before), droppable(&after));
        assert!(
            dropped > 0 && dropped == picked.len,
            "{dropped} of {}",
            picked.len
        );
        assert!(
            after_kib < before_kib,
            "clean file pages resident: {before_kib} KiB before, {after_kib} KiB after"
        );
        assert_eq!(
            rss_at(&before, clean),
            Some(64),
            "the clean mapping, touched"
        );
        assert_eq!(rss_at(&after, clean), Some(0), "the clean mapping, dropped");
        assert_eq!(
            rss_at(&after, relro),
            rss_at(&before, relro),
            "RELRO-like: kept"
        );
        // SAFETY: as above; both mappings are still readable and LEN bytes long.
        unsafe {
            let clean_now = std::slice::from_raw_parts(clean as *const u8, LEN);
            let relro_now = std::slice::from_raw_parts(relro as *const u8, LEN);
            assert!(clean_now == original, "refaulted from the file, unchanged");
            assert!(
                relro_now == written,
                "the copy-on-write page kept its write"
            );
            assert_ne!(relro_now[0], original[0]);
            libc::munmap(clean as *mut libc::c_void, LEN);
            libc::munmap(relro as *mut libc::c_void, LEN);
        }
        // The process runs on: code and read-only data come back as they were.
        static TEXT: &str = "still here after MADV_DONTNEED";
        assert_eq!(std::hint::black_box(TEXT).len(), 30);
        assert_eq!(threads("Threads:\t7\n"), Some(7));
        assert_eq!(format!("{:x}", 0xdead_beef_u32), "deadbeef");
        println!(
            "dropped: {before_kib} KiB -> {after_kib} KiB of clean file pages, \
             read + parse + madvise in {took:?}"
        );
    }
}
