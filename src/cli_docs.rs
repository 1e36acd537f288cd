//! `relaunch man` and `relaunch completions SHELL`: the man page and the shell completions,
//! generated from the clap definition so that they always match `--help`.
//!
//! This module takes the [`clap::Command`] from its caller and names no other module of the
//! crate, so the argument definitions in [`crate::cli`] can refer to it without a cycle.

use std::io::{self, Write};

use clap::{Command, Subcommand, ValueEnum};
use clap_complete::Shell;

/// The subcommands that print documentation instead of running or talking to a relaunch.
#[derive(Debug, Clone, Subcommand)]
pub enum DocsCommand {
    /// Print the man page (roff) on stdout, e.g.
    /// `relaunch man > /usr/local/share/man/man1/relaunch.1`.
    Man,
    /// Print the completion script for SHELL on stdout (see the README for where to put it).
    Completions {
        /// The shell: bash, zsh, fish, elvish or powershell.
        #[arg(value_name = "SHELL")]
        shell: CompletionShell,
    },
}

/// A shell `relaunch completions` writes a script for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CompletionShell {
    /// GNU Bash.
    Bash,
    /// Z shell.
    Zsh,
    /// fish.
    Fish,
    /// Elvish.
    Elvish,
    /// PowerShell.
    Powershell,
}

impl From<CompletionShell> for Shell {
    fn from(shell: CompletionShell) -> Shell {
        match shell {
            CompletionShell::Bash => Shell::Bash,
            CompletionShell::Zsh => Shell::Zsh,
            CompletionShell::Fish => Shell::Fish,
            CompletionShell::Elvish => Shell::Elvish,
            CompletionShell::Powershell => Shell::PowerShell,
        }
    }
}

/// Writes what `command` asks for about the program `cmd` (the whole `relaunch` command, as
/// `Args::command()` builds it) to `out`.
pub fn write(command: &DocsCommand, cmd: Command, out: &mut dyn Write) -> io::Result<()> {
    match command {
        DocsCommand::Man => man(cmd, out),
        DocsCommand::Completions { shell } => {
            let mut cmd = cmd;
            let name = cmd.get_name().to_string();
            clap_complete::generate(Shell::from(*shell), &mut cmd, name, out);
            Ok(())
        }
    }
}

/// Runs `command` for the `relaunch` binary: prints to stdout and returns the exit code, 0, or
/// 1 if stdout could not be written (a closed pipe included, as for any other output error).
pub fn run(command: &DocsCommand, cmd: Command) -> i32 {
    let mut buf = Vec::new();
    // Writing into a Vec cannot fail.
    let _ = write(command, cmd, &mut buf);
    let mut stdout = io::stdout().lock();
    match stdout.write_all(&buf).and_then(|()| stdout.flush()) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("relaunch: error: cannot write to stdout: {e}");
            1
        }
    }
}

/// The man page: clap_mangen's rendering of the whole command, its subcommands listed in their
/// own section.
fn man(cmd: Command, out: &mut dyn Write) -> io::Result<()> {
    // --help's long heading would become the section's title.
    let cmd = cmd.subcommand_help_heading("SUBCOMMANDS");
    let mut roff = Vec::new();
    clap_mangen::Man::new(cmd)
        .section("1")
        .manual("User Commands")
        .render(&mut roff)?;
    out.write_all(ascii_roff(&String::from_utf8_lossy(&roff)).as_bytes())
}

/// groff reads its input as Latin-1 unless told otherwise, and warns about bytes of UTF-8:
/// every character outside ASCII in the help text (`…`, `—`, `→`) becomes the named glyph
/// `\[uXXXX]`, which every groff renders.
fn ascii_roff(roff: &str) -> String {
    let mut ascii = String::with_capacity(roff.len());
    for c in roff.chars() {
        if c.is_ascii() {
            ascii.push(c);
        } else {
            ascii.push_str(&format!("\\[u{:04X}]", u32::from(c)));
        }
    }
    ascii
}

#[cfg(test)]
mod tests {
    use super::ascii_roff;

    #[test]
    fn non_ascii_characters_become_groff_glyphs() {
        assert_eq!(ascii_roff("a … b—c"), "a \\[u2026] b\\[u2014]c");
        assert_eq!(ascii_roff("plain"), "plain");
    }
}
