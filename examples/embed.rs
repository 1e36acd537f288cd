//! `embed`: relaunch used as a library. Runs two `hello` servers through `relaunch::api`,
//! reloads one of them (`web`) on each line read from stdin, or every SECS seconds with
//! `--every SECS`, and prints the typed outcome of each reload.
//!
//! ```text
//! cargo build --examples
//! target/debug/examples/embed            # press Enter to reload web; Ctrl-D to stop
//! target/debug/examples/embed --every 5 --hello target/debug/examples/hello
//! ```
//!
//! It prints where each server listens (`web http://127.0.0.1:PORT`), then one line per
//! reload: `reload web: ok generation=2 pid=1234 in 0.31s`, or `reload web: failed (exited):
//! REASON` with the new generation's last lines of output. It stops cleanly (every child
//! stopped and reaped, exit 0) at the end of stdin, or on SIGTERM or SIGINT, which the master
//! handles.

use std::io::BufRead;
use std::path::PathBuf;
use std::time::Duration;

use relaunch::api::{Error, Handle, Master, Program, ReloadOutcome, RuntimeError};

const USAGE: &str = "usage: embed [--hello PATH] [--every SECS]";

fn main() {
    let (hello, every) = match parse_args() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("embed: {e}\n{USAGE}");
            std::process::exit(2);
        }
    };
    if let Err(e) = run(hello, every) {
        eprintln!("embed: {e}");
        std::process::exit(e.exit_code());
    }
}

fn parse_args() -> Result<(PathBuf, Option<Duration>), String> {
    // By default, the `hello` example built next to this one.
    let mut hello = std::env::current_exe()
        .map_err(|e| format!("cannot find this program: {e}"))?
        .with_file_name("hello");
    let mut every = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--hello" => hello = args.next().ok_or("--hello needs a path")?.into(),
            "--every" => {
                let v = args.next().ok_or("--every needs a number of seconds")?;
                let secs: f64 = v
                    .parse()
                    .ok()
                    .filter(|s: &f64| s.is_finite() && *s > 0.0)
                    .ok_or_else(|| format!("--every {v:?} is not a positive number of seconds"))?;
                every = Some(Duration::from_secs_f64(secs));
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok((hello, every))
}

fn run(hello: PathBuf, every: Option<Duration>) -> Result<(), Error> {
    let server = |name: &str| -> Result<Program, Error> {
        Ok(Program::new(name, &hello)
            .listen("http=127.0.0.1:0")?
            .start_secs(Duration::from_millis(300)))
    };
    let handle = Master::new("embed")?
        .program(server("web")?)?
        .program(server("api")?)?
        .start()?;
    for program in handle.status()?.programs {
        for socket in &program.sockets {
            println!("{} http://{}", program.name, socket.address);
        }
    }
    // SIGTERM or SIGINT stop the master (it handles them): then this process ends too.
    let watcher = handle.clone();
    std::thread::spawn(move || finish(watcher.join().unwrap_or(1)));
    match every {
        Some(every) => loop {
            std::thread::sleep(every);
            reload(&handle)?;
        },
        None => {
            for line in std::io::stdin().lock().lines() {
                if line.is_err() {
                    break;
                }
                reload(&handle)?;
            }
            finish(handle.shutdown()?);
        }
    }
}

/// Says how the master ended and exits with its code (once, from whichever thread sees it
/// first).
fn finish(code: i32) -> ! {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| println!("stopped (exit code {code})"));
    std::process::exit(code)
}

fn reload(handle: &Handle) -> Result<(), Error> {
    let outcome = match handle.reload("web") {
        // Stopped by a signal meanwhile: end as the master did.
        Err(Error::Runtime(RuntimeError::MasterGone)) => finish(handle.join().unwrap_or(1)),
        other => other?,
    };
    match outcome {
        ReloadOutcome::Reloaded {
            generation,
            pid,
            duration,
        } => println!(
            "reload web: ok generation={generation} pid={} in {:.2}s",
            pid.unwrap_or_default(),
            duration.as_secs_f64()
        ),
        ReloadOutcome::Failed {
            failure,
            reason,
            output_tail,
            ..
        } => {
            println!("reload web: failed ({failure}): {reason}");
            for line in output_tail {
                println!("  {}: {}", line.stream, line.line);
            }
        }
        other => println!("reload web: {other:?}"),
    }
    Ok(())
}
