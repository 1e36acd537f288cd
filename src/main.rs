//! The `relaunch` binary: parses arguments, sets up logging, and maps the outcome to an exit
//! code (see `relaunch --help`).

use std::io::IsTerminal;
use std::process::exit;

use clap::error::ErrorKind;
use clap::{CommandFactory, FromArgMatches};
use relaunch::cli::{Args, Subcommand};
use relaunch::daemon::{self, Detached};
use tracing::Level;

/// Exit code for usage errors.
const USAGE: i32 = 2;

fn main() {
    // Before any fd of relaunch's own exists: which fds came from the parent (`--listen fd:N`).
    relaunch::record_inherited_fds();
    let parsed = Args::command().try_get_matches().and_then(|matches| {
        relaunch::cli::alone_with_config(&matches)?;
        Args::from_arg_matches(&matches)
    });
    let args = match parsed.and_then(Args::validate) {
        Ok(args) => args,
        Err(e) if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => {
            let _ = e.print();
            exit(0);
        }
        Err(e) => {
            eprintln!("relaunch: error: {}", one_line(&e.render().to_string()));
            exit(USAGE);
        }
    };
    match args.client {
        Some(Subcommand::Client(command)) => exit(relaunch::client::run(command)),
        Some(Subcommand::Docs(command)) => exit(relaunch::cli_docs::run(&command, Args::command())),
        Some(Subcommand::CheckConfig { file }) => exit(relaunch::config_file::check(&file)),
        None => {}
    }
    let level = args.log_level();
    let file = args.config.clone();
    let (mut config, file_level) = match &args.config {
        Some(path) => match relaunch::config_file::load_file(path) {
            Ok(loaded) => (loaded.config, loaded.log_level),
            Err(e) => {
                eprintln!("relaunch: error: {e}");
                exit(USAGE);
            }
        },
        None => (args.into_config(), None),
    };
    if config.programs.len() > 1 {
        // Hosting several programs in one master is the runtime's next step.
        eprintln!(
            "relaunch: error: {}: {} programs: this relaunch runs one program per master so far \
(check the file with relaunch check-config)",
            file.as_deref()
                .unwrap_or(std::path::Path::new(""))
                .display(),
            config.programs.len()
        );
        exit(USAGE);
    }
    // Detach first: before any thread, socket or signal handler exists, and before logging
    // decides about colours for a terminal the daemon will not have.
    let startup = if config.daemon {
        if let Err(e) = daemon::absolute_program(&mut config.program_mut().command) {
            eprintln!(
                "relaunch: error: cannot make the program path {:?} absolute: {e}",
                config.program().command.program
            );
            exit(1);
        }
        let keep: Vec<std::os::fd::RawFd> = config
            .programs
            .iter()
            .flat_map(|program| &program.listen)
            .filter_map(|spec| match spec.addr {
                relaunch::spec::ListenAddr::Fd(fd) => Some(fd),
                _ => None,
            })
            .collect();
        match daemon::detach(&keep) {
            Ok(Detached::Parent { code, message }) => {
                if code != 0 {
                    eprintln!("relaunch: error: {message}");
                }
                exit(code);
            }
            Ok(Detached::Daemon(startup)) => Some(startup),
            Err(e) => {
                eprintln!("relaunch: error: cannot detach: {e}");
                exit(1);
            }
        }
    } else {
        None
    };
    init_logging(level, file_level);
    let result = match startup {
        Some(startup) => relaunch::run_detached(config, startup),
        None => relaunch::run(config),
    };
    match result {
        Ok(code) => exit(code),
        Err(failure) => {
            eprintln!("relaunch: error: {:#}", failure.error);
            exit(failure.code);
        }
    }
}

/// Folds clap's multi-line error into one line, without the usage and help hints.
fn one_line(rendered: &str) -> String {
    // The usage block (which spans two lines: the master form and the subcommands) ends at the
    // first blank line.
    let mut in_usage = false;
    let parts: Vec<&str> = rendered
        .lines()
        .map(str::trim)
        .filter(|l| {
            in_usage = (in_usage || l.starts_with("Usage:")) && !l.is_empty();
            !l.is_empty() && !in_usage && !l.starts_with("For more information")
        })
        .map(|l| l.strip_prefix("error: ").unwrap_or(l))
        .collect();
    let mut line = parts.join(" ");
    line.push_str(" (see relaunch --help)");
    line
}

/// The level: -v/-q, else RELAUNCH_LOG, else the configuration file's `log-level`, else info.
fn init_logging(flag: Option<Level>, file: Option<Level>) {
    let mut bad_env = None;
    let fallback = file.unwrap_or(Level::INFO);
    let level = flag.unwrap_or_else(|| match std::env::var("RELAUNCH_LOG") {
        Ok(v) if !v.trim().is_empty() => v.trim().parse::<Level>().unwrap_or_else(|_| {
            bad_env = Some(v);
            fallback
        }),
        _ => fallback,
    });
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal())
        .with_max_level(level)
        .init();
    if let Some(v) = bad_env {
        tracing::warn!(
            "RELAUNCH_LOG={v:?} is not a level (expected error, warn, info, debug or trace); using info"
        );
    }
}
