//! The `relaunch` binary: parses arguments, sets up logging, and maps the outcome to an exit
//! code (see `relaunch --help`).

use std::process::exit;

use clap::error::ErrorKind;
use clap::{CommandFactory, FromArgMatches};
use relaunch::background::Side;
use relaunch::cli::{Args, Subcommand};

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
    // With a file, the master runs its programs by name, and SIGHUP reads the file again.
    config.source = file;
    // Detach first: before any thread, socket or signal handler exists, and before logging
    // decides about colours for a terminal the daemon will not have.
    let startup = if config.daemon {
        match relaunch::background::detach(&mut config) {
            Ok(Side::Original) => exit(0),
            Ok(Side::Daemon(startup)) => Some(startup),
            Err(failure) => {
                eprintln!("relaunch: error: {:#}", failure.error);
                exit(failure.code);
            }
        }
    } else {
        None
    };
    relaunch::logging::init(level, file_level);
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
