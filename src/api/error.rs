//! The errors of the library API: a bad value (usage), something the running master refused
//! or could not do (runtime), and a program that could not be started (spawn).

use std::fmt;

/// What went wrong at the API boundary. Each kind maps to the exit code the `relaunch`
/// command uses for it ([`Error::exit_code`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// A bad value: `setting` names the setting (as its command-line flag, e.g. `--listen`),
    /// `message` names the value and says what is valid. The same message the command line
    /// and the configuration file give.
    Usage {
        /// The setting, as its flag (`--listen`), or `name` for a program's name.
        setting: String,
        /// What is wrong, naming the value and what would be valid.
        message: String,
    },
    /// The running master refused or could not do what was asked, or is gone.
    Runtime(RuntimeError),
    /// A program could not be started: it was not found, or is not executable.
    Spawn {
        /// Why, in words, naming the program.
        message: String,
        /// The shell's exit code for it: 127 not found, 126 not executable.
        code: i32,
    },
}

/// Why the running master did not do what was asked.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RuntimeError {
    /// No program has that name.
    UnknownProgram {
        /// The name asked for.
        name: String,
        /// The programs there are.
        known: Vec<String>,
    },
    /// The master has stopped (or never started): nothing answers the handle any more.
    MasterGone,
    /// A master already runs in this process; there can be only one (it reaps every child
    /// of the process and owns its signal handlers).
    AlreadyRunning,
    /// The master refused the request or failed to carry it out (a stopped program asked to
    /// reload, a program added twice, relaunch stopping, a socket that cannot be bound, ...).
    Failed(String),
}

impl Error {
    /// A usage error about `setting`.
    pub(crate) fn usage(setting: &str, message: impl Into<String>) -> Error {
        Error::Usage {
            setting: setting.to_owned(),
            message: message.into(),
        }
    }

    /// A runtime failure, in words.
    pub(crate) fn failed(message: impl Into<String>) -> Error {
        Error::Runtime(RuntimeError::Failed(message.into()))
    }

    /// The exit code the `relaunch` command gives this error: 2 usage, 1 runtime, 126 or
    /// 127 spawn.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Usage { .. } => 2,
            Error::Runtime(RuntimeError::UnknownProgram { .. }) => 2,
            Error::Runtime(_) => 1,
            Error::Spawn { code, .. } => *code,
        }
    }

    /// Turns the master's failure (at startup, or adding a program) into the API's kinds.
    pub(crate) fn from_failure(failure: &crate::Failure) -> Error {
        let message = format!("{:#}", failure.error);
        match failure.code {
            2 => Error::usage("", message),
            126 | 127 => Error::Spawn {
                message,
                code: failure.code,
            },
            _ => Error::failed(message),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Usage { setting, message } if setting.is_empty() => f.write_str(message),
            Error::Usage { setting, message } => write!(f, "{setting}: {message}"),
            Error::Runtime(e) => e.fmt(f),
            Error::Spawn { message, .. } => f.write_str(message),
        }
    }
}

impl fmt::Display for RuntimeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RuntimeError::UnknownProgram { name, known } => write!(
                f,
                "no program named {name:?} (the programs are: {})",
                known.join(", ")
            ),
            RuntimeError::MasterGone => f.write_str("the relaunch master is not running"),
            RuntimeError::AlreadyRunning => f.write_str(
                "a relaunch master already runs in this process (one per process: it reaps \
                 every child of the process and owns its signal handlers)",
            ),
            RuntimeError::Failed(message) => f.write_str(message),
        }
    }
}

impl std::error::Error for Error {}

impl std::error::Error for RuntimeError {}

impl From<RuntimeError> for Error {
    fn from(e: RuntimeError) -> Error {
        Error::Runtime(e)
    }
}
